"""Research warm starts: examples on freshly rendered synthetic clips, expression kinds, and
System 1's warm-start curriculum (the research knobs of omnir1.experimental.params).

The product's warm start (omnir1.rl.warmstart.run_warm_start) trains on the data set's own
expressions; `run_study_warm_start` gives it the curriculum's stages and the rendered examples
as hooks. Rendered clips and frames are drawn from new scenes like a synthetic data set's own
(its `synth_summary.json`), none of them kept: a tiny model must look instead of remembering
the few training videos' answers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnir1.data.synth.generate import OBJECTS_FILE
from omnir1.errors import DataError
from omnir1.experimental.params import EXPRESSION_KINDS, names_any
from omnir1.fsutil import read_json
from omnir1.rl.warmstart import System1Stage, _box_example, _synth_objects, _system1_example


def object_words(data: str | Path) -> set[str]:
    """Every word that names an object of the data set (colour, shape, size, sound; empty
    without `synth_objects.json`, when read-the-words keys on whole expressions)."""
    fields = ("color", "shape", "size", "sound")
    return {
        word
        for objects in _synth_objects(data).values()
        for o in objects.values()
        for key in fields
        for word in str(o.get(key) or "").lower().split()
    }


def set_kinds(data: str | Path, samples) -> list[str | None]:
    """The kind of each of a data set's expressions (omnir1.data.synth.expressions
    .expression_kind; "null" without a referent): known only for a synthetic set's own (with
    `synth_objects.json`), None otherwise."""
    from omnir1.data.synth.expressions import expression_kind

    if not (Path(data) / OBJECTS_FILE).is_file():
        return [None] * len(samples)
    return ["null" if s.is_null else expression_kind(s.expression) for s in samples]


def _synth_config(data: str | Path):
    """The generator settings of a synthetic data set (its `synth_summary.json`)."""
    from omnir1.data.synth.generate import SUMMARY_FILE, SynthConfig

    path = Path(data) / SUMMARY_FILE
    if not path.is_file():
        raise DataError(
            path, "not found: warm_start.*_rendered draws scenes like a synthetic data set's"
        )
    summary = read_json(path)
    return SynthConfig(
        width=summary["width"],
        height=summary["height"],
        background=summary.get("background", "gradient"),
        object_scale=summary.get("object_scale", 1.0),
        layout=summary.get("layout", "free"),
        duration_s=summary.get("duration_s", 10.0),
        fps=summary.get("fps"),
        sample_rate=summary.get("sample_rate", 16_000),
    )


def rendered_frames(data: str | Path, n: int, *, seed: int = 0, objects: int | None = None):
    """`n` (frame (H, W, 3) uint8, "the red circle", [box]) drawn from new synthetic scenes like
    the data set's own (its `synth_summary.json`: background, object sizes, frame size), one
    random time of each; `objects` keeps only the first that many objects of a scene. Targets
    smaller than a quarter of a small shape's area are not asked about."""
    from omnir1.data.masks import mask_box
    from omnir1.data.synth.generate import _sample_scene
    from omnir1.data.synth.scene import SIZES, render_frame

    cfg = _synth_config(data)
    radius = SIZES["small"] * cfg.object_scale * min(cfg.width, cfg.height)
    min_area = 0.25 * np.pi * radius**2
    out = []
    draw = 0
    while len(out) < n:
        rng = np.random.default_rng([seed, draw, 7])
        draw += 1
        scene = _sample_scene(cfg, "train", rng)
        if objects is not None:
            scene.objects = scene.objects[:objects]
        img, masks = render_frame(scene, float(rng.uniform(0, scene.duration_s)))
        visible = [i for i, m in masks.items() if m.sum() >= min_area]
        if not visible:
            continue
        target = visible[int(rng.integers(len(visible)))]
        obj = next(o for o in scene.objects if o.obj_id == target)
        out.append((img, f"the {obj.color} {obj.shape}", [mask_box(masks[target])]))
    return out


@dataclass
class RenderedExpression:
    """An expression on a freshly rendered clip, with what System 1's answer is derived from."""

    clip: object  # omnir1.systems.reasoning.VideoClip
    expression: str
    kind: str  # appearance | audio | temporal | multi (omnir1.data.synth.expressions)
    description: str  # "the red circle" (" and "-joined for several objects)
    visible: list[int]  # System-1 frames on which a referent is visible


def scene_expressions(cfg, scene, rng: np.random.Generator, s1cfg, *, split: str = "train"):
    """System 1's view of a synthetic scene and its expressions with referents (null ones
    dropped): the clip `load_clip` would read from the scene's video in a data set made with
    `cfg` (frames at `s1cfg.fps` under its pixel budget, the 16 kHz soundtrack), `rng` drawn
    from as the generator draws for that video, so a data set's own video gives its own
    soundtrack and expressions."""
    from omnir1.data.synth import expressions as ex
    from omnir1.data.synth.generate import _expressions
    from omnir1.data.synth.scene import first_last_visible, render, soundtrack
    from omnir1.media.video import resize, sample_times, smart_resize
    from omnir1.systems.reasoning import VideoClip

    frames, masks = render(scene)
    audio = np.clip(soundtrack(scene, cfg.sample_rate, rng), -1.0, 1.0)
    vis = {i: ex.Visibility(*first_last_visible(m, scene.fps)) for i, m in masks.items()}
    times = sample_times(scene.duration_s, s1cfg.fps, s1cfg.max_frames)
    # the frame shown at a sample time, as load_clip picks it from the frame folder
    index = np.minimum((times * scene.fps + 1e-9).astype(int), scene.num_frames - 1)
    size = smart_resize(scene.height, scene.width, max_pixels=s1cfg.max_pixels)
    clip = VideoClip(
        frames=np.stack([resize(frames[i], size) for i in index.tolist()]),
        times=times,
        source_indices=index,
        native_size=(scene.height, scene.width),
        audio=audio,
        duration_s=scene.duration_s,
    )
    objects = {o.obj_id: o for o in scene.objects}
    out = []
    for e in _expressions(cfg, split, scene, vis, rng):
        if not e.obj_ids:
            continue
        shown = [
            k for k, i in enumerate(index.tolist()) if any(masks[o][i].any() for o in e.obj_ids)
        ]
        names = [f"the {objects[o].color} {objects[o].shape}" for o in e.obj_ids]
        out.append(RenderedExpression(clip, e.text, e.kind, " and ".join(names), shown))
    return out


def rendered_clips(
    data: str | Path,
    n: int,
    s1cfg,
    *,
    seed: int = 0,
    stage: int = 0,
    kinds=None,
    words: Sequence[str] = (),
    keep=None,
):
    """`n` expressions, each with a target visible on some System-1 frame, on new synthetic
    clips like the data set's own (`synth_summary.json`: layout, background, sizes, duration;
    `scene_expressions`): the generator's mix for a training video, or only `kinds`, only those
    with one of `words`, only those `keep` (a RenderedExpression predicate) accepts. No video of
    any split is involved. Each curriculum `stage` draws scenes of its own."""
    from tqdm import tqdm

    from omnir1.data.synth.generate import _sample_scene
    from omnir1.data.synth.scene import COLORS

    cfg = _synth_config(data)
    wanted = {w.lower() for w in words}
    # only expressions naming an object of a colour hold its word: other scenes need no pixels
    colours = wanted if wanted and wanted <= set(COLORS) else None
    out: list[RenderedExpression] = []
    draw = 0
    with tqdm(total=n, desc="rendered scenes' expressions", mininterval=2.0) as bar:
        while len(out) < n:
            rng = np.random.default_rng([seed, draw, 11, stage] if stage else [seed, draw, 11])
            draw += 1
            scene = _sample_scene(cfg, "train", rng)
            if colours is not None and not any(o.color in colours for o in scene.objects):
                continue
            found = [
                r
                for r in scene_expressions(cfg, scene, rng, s1cfg)
                if r.visible
                and (kinds is None or r.kind in kinds)
                and names_any(r.expression, words)
                and (keep is None or keep(r))
            ]
            out += found
            bar.update(min(len(found), n - bar.n))
    return out[:n]


def rendered_system1_examples(
    reasoner, data: str | Path, n: int, *, seed: int = 0, stage: int = 0, kinds=None, words=()
):
    """`n` System-1 examples on freshly rendered clips (`rendered_clips`): as many scenes as a
    data set of thousands of videos, none of them kept, so a tiny System 1 learns to look rather
    than remember the answers of the few training videos."""
    rendered = rendered_clips(
        data, n, reasoner.cfg, seed=seed, stage=stage, kinds=kinds, words=words
    )
    return examples_of_rendered(reasoner, rendered, seed=seed)


def examples_of_rendered(reasoner, rendered: Sequence[RenderedExpression], *, seed: int = 0):
    """System 1's prompt on each rendered clip -> the answer derived from its visible frames."""
    from tqdm import tqdm

    return [
        _system1_example(
            reasoner,
            r.clip,
            r.expression,
            r.visible,
            r.description,
            random.Random(seed * 1_000_003 + i),
        )
        for i, r in enumerate(tqdm(rendered, desc="rendered System-1 examples", mininterval=2.0))
    ]


def rendered_grounder_examples(
    grounder, data: str | Path, n: int, *, seed: int = 0, objects: int | None = None
):
    """`n` (frame, "the red circle") -> box examples on freshly drawn single frames of new
    synthetic scenes (`rendered_frames`): positions, colours and backgrounds never repeat, so a
    tiny grounder must localise instead of remembering where things were in the few training
    videos (the synthetic analogue of the grounding images the release trains System 2 on). No
    video of any split is involved."""
    return [
        _box_example(grounder, img, text, boxes)
        for img, text, boxes in rendered_frames(data, n, seed=seed, objects=objects)
    ]


def study_samples(fmt: str, data: str | Path, split: str = "train", kinds=None, words=()):
    """`trainable_samples` of a synthetic set's expressions of `kinds` only (`train.kinds`)
    with one of `words` (`train.words`; none: any)."""
    from omnir1.rl.train import trainable_samples

    data = Path(data)
    samples = [s for s in trainable_samples(fmt, data, split) if names_any(s.expression, words)]
    if kinds is not None and not set(kinds) >= set(EXPRESSION_KINDS):
        known = set_kinds(data, samples)
        if samples and known[0] is None:
            raise DataError(
                data, "train.kinds: expression kinds are known only for synthetic data sets"
            )
        samples = [s for s, kind in zip(samples, known, strict=True) if kind in kinds]
    if not samples:
        chosen = f" naming {', '.join(words)} (train.words)" if words else ""
        raise DataError(data, f"no {split!r} expressions with a referent{chosen} to train on")
    return samples


def run_study_warm_start(params, *, data, fmt: str, models_dir, out, grounder_from=None) -> dict:
    """`run_warm_start` with the research knobs of `params` (StudyParams): the curriculum of
    `warm_start.system1_stages` (each on the set's expressions of its kinds and words, plus its
    rendered clips) and `warm_start.grounder_rendered` frames for the grounder."""
    from omnir1.rl.train import trainable_samples
    from omnir1.rl.warmstart import run_warm_start

    ws = params.warm_start
    seed = params.train.seed
    curriculum = ws.system1_curriculum()
    samples = trainable_samples(fmt, Path(data))  # passed on: the stages index this list
    kinds = set_kinds(data, samples)
    if kinds[0] is None and any(s.filter_set and not s.all_kinds for s in curriculum):
        raise DataError(
            Path(data),
            "warm_start.system1_stages names expression kinds, which are known only for "
            "synthetic data sets (synth_objects.json)",
        )

    def stage_of(stage) -> System1Stage:
        def select(i: int) -> bool:
            return not stage.filter_set or stage.wants(samples[i].expression, kinds[i])

        def extra(reasoner, number: int) -> list:
            if not stage.rendered:
                return []
            return rendered_system1_examples(
                reasoner,
                data,
                stage.rendered,
                seed=seed,
                stage=number,
                kinds=stage.kinds,
                words=stage.words,
            )

        info = {"rendered": stage.rendered, "kinds": list(stage.kinds), "words": list(stage.words)}
        return System1Stage(stage.finetune, select=select, extra=extra, info=info)

    def grounder_extra(grounder) -> list:
        if not ws.grounder_rendered:
            return []
        return rendered_grounder_examples(grounder, data, ws.grounder_rendered, seed=seed)

    return run_warm_start(
        params,
        data=data,
        fmt=fmt,
        models_dir=models_dir,
        out=out,
        grounder_from=grounder_from,
        system1_stages=[stage_of(s) for s in curriculum],
        grounder_extra=grounder_extra,
        grounder_info={"rendered": ws.grounder_rendered},
        samples=samples,  # read once: the stages' `select` indexes this list
    )
