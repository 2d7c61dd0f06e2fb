"""Referring expressions for a rendered scene, each with its exact referents.

Every expression is checked against the scene it describes: an appearance or audio expression
names exactly one object, a temporal one is true of exactly one object (with a margin so that
frame rounding cannot change the answer), and a null expression names nothing in the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnir1.data.synth.scene import COLORS, SOUNDS, Scene, SceneObject

MARGIN_S = 0.75  # temporal expressions need events at least this far apart
KINDS = ("appearance", "audio", "temporal", "multi")  # the kinds with a referent


@dataclass(frozen=True)
class Expression:
    text: str
    kind: str  # appearance | audio | temporal | multi | null
    obj_ids: tuple[int, ...]

    @property
    def type_id(self) -> int:
        """ReVOS type_id: 1 for reasoning (temporal), 0 otherwise."""
        return 1 if self.kind == "temporal" else 0


@dataclass(frozen=True)
class Visibility:
    first: float | None  # time of the first frame with visible pixels
    last: float | None


def expression_kind(text: str) -> str:
    """The kind of an expression with a referent that this module wrote, from its words alone
    (data sets keep only the text): "the shape that ..." is temporal, "the object making ..."
    audio, "all the ..." or "... and ..." multi, anything else appearance. A null expression
    reads like an appearance or audio one: it is known by having no referent."""
    if text.startswith("the shape that "):
        return "temporal"
    if text.startswith("the object making "):
        return "audio"
    if text.startswith("all the ") or " and " in text:
        return "multi"
    return "appearance"


def _appearance_text(obj: SceneObject, scene: Scene, rng: np.random.Generator) -> str:
    others = [o for o in scene.objects if o.obj_id != obj.obj_id]
    options = [f"the {obj.color} {obj.shape}", f"the {obj.size} {obj.color} {obj.shape}"]
    if all(o.shape != obj.shape for o in others):
        options.append(f"the {obj.shape}")
    if all(o.color != obj.color for o in others):
        options.append(f"the {obj.color} shape")
    return options[rng.integers(len(options))]


def appearance(
    scene: Scene, targets: list[SceneObject], rng: np.random.Generator
) -> list[Expression]:
    return [Expression(_appearance_text(o, scene, rng), "appearance", (o.obj_id,)) for o in targets]


def audio(scene: Scene, targets: list[SceneObject]) -> list[Expression]:
    """'the object making the high whistle': only for a target that sounds and whose class
    (hence sound) no other object in the video shares."""
    out = []
    for obj in targets:
        if obj.sound_intervals and all(o.shape != obj.shape for o in scene.objects if o is not obj):
            out.append(
                Expression(f"the object making the {SOUNDS[obj.shape]}", "audio", (obj.obj_id,))
            )
    return out


def temporal(scene: Scene, vis: dict[int, Visibility], allowed: set[int]) -> list[Expression]:
    """Reasoning expressions about the order of events; kept only when exactly one object,
    and one from `allowed`, satisfies them."""
    out: list[Expression] = []
    objs = scene.objects
    end_t = scene.frame_time(scene.num_frames - 1)
    entering = {
        o.obj_id: vis[o.obj_id].first
        for o in objs
        if vis[o.obj_id].first is not None and vis[o.obj_id].first > 0
    }

    # "the shape that enters after the drum beat starts"
    for src in objs:
        if not src.sound_intervals or any(o.shape == src.shape for o in objs if o is not src):
            continue
        onset = src.sound_intervals[0][0]
        after = [i for i, t in entering.items() if t > onset + MARGIN_S and i != src.obj_id]
        close = [i for i, t in entering.items() if abs(t - onset) <= MARGIN_S]
        if len(after) == 1 and not close and after[0] in allowed:
            out.append(
                Expression(
                    f"the shape that enters after the {SOUNDS[src.shape]} starts",
                    "temporal",
                    (after[0],),
                )
            )
            break

    # "the shape that appears last"
    firsts = sorted((v.first, i) for i, v in vis.items() if v.first is not None)
    if len(firsts) >= 2 and firsts[-1][0] - firsts[-2][0] >= MARGIN_S and firsts[-1][1] in allowed:
        out.append(Expression("the shape that appears last", "temporal", (firsts[-1][1],)))

    # "the shape that leaves before the end"
    leaving = [i for i, v in vis.items() if v.last is not None and v.last < end_t - MARGIN_S]
    if len(leaving) == 1 and leaving[0] in allowed:
        out.append(
            Expression("the shape that leaves before the video ends", "temporal", (leaving[0],))
        )

    # "the shape that never makes a sound"
    silent = [o.obj_id for o in objs if not o.sound_intervals]
    if len(objs) >= 3 and len(silent) == 1 and silent[0] in allowed:
        out.append(Expression("the shape that never makes a sound", "temporal", (silent[0],)))
    return out


def multi(scene: Scene, rng: np.random.Generator) -> list[Expression]:
    by_color: dict[str, list[int]] = {}
    for o in scene.objects:
        by_color.setdefault(o.color, []).append(o.obj_id)
    groups = [(c, ids) for c, ids in by_color.items() if len(ids) >= 2]
    if groups:
        color, ids = groups[rng.integers(len(groups))]
        return [Expression(f"all the {color} shapes", "multi", tuple(sorted(ids)))]
    if len(scene.objects) >= 2:
        a, b = rng.choice(len(scene.objects), size=2, replace=False)
        oa, ob = scene.objects[int(a)], scene.objects[int(b)]
        return [
            Expression(
                f"the {oa.color} {oa.shape} and the {ob.color} {ob.shape}",
                "multi",
                tuple(sorted((oa.obj_id, ob.obj_id))),
            )
        ]
    return []


def null(
    scene: Scene, shapes: tuple[str, ...], rng: np.random.Generator, *, with_sound: bool
) -> Expression:
    """An expression whose referent is not in the video: a colour/shape pair no object has."""
    present = {(o.color, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLORS for s in shapes if (c, s) not in present]
    color, shape = absent[rng.integers(len(absent))]
    text = f"the {color} {shape}"
    if with_sound:
        text += f" making the {SOUNDS[shape]}"
    return Expression(text, "null", ())
