"""How good a System 1 is at its GRPO task on held-out samples, in the rewards' own terms.

For every sample, completions (the policy's samples, or a baseline's answers) are scored by the
same `RewardEngine` as training (System 2 included). Reported: mean total reward (the recipe's
rewards summed) and each reward's mean, the rate of well-formed answers, keyframes per answer,
the keyframe hit rate (keyframes on which the target is visible / keyframes) and those hits per
answer (the rate alone falls when a policy adds keyframes, as the frame term pays up to four,
on clips where the target is visible on fewer frames), the box IoU
(the video accuracy reward's matched box IoU; 0 for an answer without keyframes), split into
the share of answers with a keyframe on which the target is visible and the box IoU of those
answers (System 2's boxes on the frames System 1 chose), and the mean of every reward
component over the answers where it was computed.

The ignore-the-video baseline answers every sample with the same frames (those on which targets
were most often visible in the training set) and the expression itself as the description.
The read-the-words baseline also never looks at the video but picks its frames by the
expression's wording: per template (the expression with the words that name objects masked,
so "the red circle that appears last" and "the blue star that appears last" share one), the
frames on which training targets of that template were most often visible. It is what a
policy can learn from temporal words alone ("appears last": late frames), so a System 1 beats
it only by looking at the frames.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field


@dataclass
class Assessment:
    samples: int
    completions: int
    reward: float
    rewards: dict[str, float]
    format_rate: float
    keyframes_per_answer: float
    keyframe_hit_rate: float
    keyframe_hits_per_answer: float
    box_iou: float
    answers_with_hit: float  # share of answers with a keyframe on which the target is visible
    box_iou_on_hits: float  # box IoU of those answers: box_iou = answers_with_hit * this
    components: dict[str, float] = field(default_factory=dict)
    # per sample, in order: the sums its figures are made of (SAMPLE_SUMS), for intervals
    # that resample the samples (omnir1.experimental.study.paired_intervals)
    per_sample: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# A sample's sums: a figure over any set of samples is a ratio of their totals (HEADLINE_RATIOS).
SAMPLE_SUMS = ("completions", "reward", "keyframes", "hits", "box_iou", "answers_with_hit")
# figure -> (numerator, denominator) among SAMPLE_SUMS, as `assess` computes it
HEADLINE_RATIOS = {
    "reward": ("reward", "completions"),
    "keyframe_hit_rate": ("hits", "keyframes"),
    "box_iou": ("box_iou", "completions"),
    "answers_with_hit": ("answers_with_hit", "completions"),
    "box_iou_on_hits": ("box_iou", "answers_with_hit"),
}


def answer_box_iou(rewards: dict) -> float:
    """An answer's box IoU: the `box_iou` component of its rewards (name -> RewardResult); 0
    where none computed one (no keyframe, no box)."""
    for r in rewards.values():
        if r.components.get("box_iou") is not None:
            return r.components["box_iou"]
    return 0.0


def assess(engine, contexts: Sequence, completions: Sequence[Sequence[str]]) -> Assessment:
    """Score `completions[i]` (any number per sample) against `contexts[i]`."""
    totals, formats, keyframes, hits, ious, answers_with_hit = [], [], 0, 0, [], 0
    per_sample: list[dict[str, float]] = []
    per_reward: dict[str, list[float]] = {name: [] for name in engine.rewards}
    components: dict[str, list[float]] = {}
    from tqdm import tqdm

    pairs = list(zip(contexts, completions, strict=True))
    for ctx, texts in tqdm(pairs, desc="rewards", mininterval=2.0, disable=len(pairs) < 8):
        scores = engine.score_group(ctx, list(texts))
        sums = dict.fromkeys(SAMPLE_SUMS, 0.0)
        for parsed, rewards in zip(scores.parsed, scores.rewards, strict=True):
            totals.append(engine.total(rewards))
            formats.append(parsed.format_ok)
            answer_hits = sum(ctx.target.union_areas[k] > 0 for k in parsed.keyframes)
            keyframes += len(parsed.keyframes)
            hits += answer_hits
            for name, r in rewards.items():
                per_reward[name].append(r.total)
                for key, value in r.components.items():
                    if value is not None:
                        components.setdefault(f"{name}.{key}", []).append(value)
            ious.append(answer_box_iou(rewards))
            answers_with_hit += answer_hits > 0
            answer = (1, totals[-1], len(parsed.keyframes), answer_hits, ious[-1], answer_hits > 0)
            for key, value in zip(SAMPLE_SUMS, answer, strict=True):
                sums[key] += float(value)
        per_sample.append(sums)
    n = len(totals)

    def mean(values) -> float:
        values = list(values)
        return float(sum(values) / len(values)) if values else 0.0

    return Assessment(
        samples=len(contexts),
        completions=n,
        reward=mean(totals),
        rewards={k: mean(v) for k, v in per_reward.items()},
        format_rate=mean(formats),
        keyframes_per_answer=keyframes / n if n else 0.0,
        keyframe_hit_rate=hits / keyframes if keyframes else 0.0,
        keyframe_hits_per_answer=hits / n if n else 0.0,
        box_iou=mean(ious),
        answers_with_hit=answers_with_hit / n if n else 0.0,
        box_iou_on_hits=sum(ious) / answers_with_hit if answers_with_hit else 0.0,
        components={k: mean(v) for k, v in sorted(components.items())},
        per_sample=per_sample,
    )


def grounder_on_truth(engine, contexts: Sequence, descriptions: Sequence[str]) -> dict:
    """System 2 alone, as System 1 cannot see it: for every frame on which a sample's target is
    visible, a one-moment answer on that frame with the target's true description
    (`descriptions[i]`), scored by `engine` (box IoU as the reward computes it): about what a
    visible keyframe earns, so a grounder that scores low here caps every System 1's box IoU
    (its warm start stopped partway, research/LOG.md). By quartile of the target's
    pixel area on the frame: partial views are the hard ones."""
    from omnir1.rl.warmstart import system1_answer

    ious: list[float] = []
    areas: list[float] = []
    per_sample: list[float] = []
    for ctx, text in zip(contexts, descriptions, strict=True):
        visible = [f for f, area in enumerate(ctx.target.union_areas) if area > 0]
        if not visible:
            continue
        scores = engine.score_group(
            ctx, [system1_answer([f], text, 1, ctx.frame_times) for f in visible]
        )
        frame_ious = [answer_box_iou(rewards) for rewards in scores.rewards]
        ious += frame_ious
        areas += [float(ctx.target.union_areas[f]) for f in visible]
        per_sample.append(sum(frame_ious) / len(frame_ious))
    if not ious:
        return {"samples": 0, "frames": 0}
    order = sorted(range(len(ious)), key=areas.__getitem__)
    quarters = [order[q * len(order) // 4 : (q + 1) * len(order) // 4] for q in range(4)]
    return {
        "samples": len(per_sample),
        "frames": len(ious),
        "box_iou": sum(ious) / len(ious),
        "box_iou_per_sample": sum(per_sample) / len(per_sample),
        "zero_share": sum(iou == 0 for iou in ious) / len(ious),
        "box_iou_by_area_quartile": [
            sum(ious[i] for i in q) / len(q) if q else 0.0 for q in quarters
        ],
    }


def policy_completions(
    reasoner,
    clips: Sequence,
    expressions: Sequence[str],
    *,
    per_sample: int,
    seed: int = 0,
    rows: int = 16,
) -> list[list[str]]:
    """`per_sample` sampled completions of the policy for every (clip, expression). The
    expressions of one clip (the same clip object) are sampled together, up to `rows`
    completions per generate call (GlobalReasoner.sample_batch, seeded with seed + the first
    expression's index); expression i's prompt is drawn with seed + i."""
    import random

    from tqdm import tqdm

    per_call = max(1, rows // per_sample)
    by_clip: dict[int, list[int]] = {}
    for i, clip in enumerate(clips):
        by_clip.setdefault(id(clip), []).append(i)
    calls = [
        indices[start : start + per_call]
        for indices in by_clip.values()
        for start in range(0, len(indices), per_call)
    ]
    out: list[list[str]] = [[] for _ in expressions]
    with tqdm(total=len(expressions), desc="answers", mininterval=2.0) as bar:
        for call in calls:
            clip = clips[call[0]]
            prompts = [
                reasoner.chat_prompt(
                    reasoner.messages(clip, expressions[i], random.Random(seed + i))
                )
                for i in call
            ]
            texts = reasoner.sample_batch(
                clip, prompts, num_return_sequences=per_sample, seed=seed + call[0]
            )
            for i, answers in zip(call, texts, strict=True):
                out[i] = answers
            bar.update(len(call))
    return out


def prior_frames(train_targets: Sequence, k: int) -> list[int]:
    """The k frames on which training targets were most often visible (ties: earlier first)."""
    counts: Counter[int] = Counter()
    for target in train_targets:
        counts.update(f for f, area in enumerate(target.union_areas) if area > 0)
    return sorted(f for f, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k])


def ignore_video_completions(
    train_targets: Sequence, expressions: Sequence[str], *, moments: int, frame_times: Sequence
) -> list[list[str]]:
    """The ignore-the-video baseline's answer for every expression (`frame_times`: the
    FrameTimes of each expression's clip, which the answer's times are written in)."""
    from omnir1.rl.warmstart import system1_answer

    frames = prior_frames(train_targets, moments)
    return [
        [system1_answer(frames, e, moments, times)]
        for e, times in zip(expressions, frame_times, strict=True)
    ]


def expression_template(expression: str, object_words: Collection[str]) -> str:
    """The expression with the words that name objects (and their plurals) masked as "_"."""
    words = []
    for word in expression.lower().split():
        bare = word.strip(",.;:!?")
        named = bare in object_words or (bare.endswith("s") and bare[:-1] in object_words)
        words.append("_" if named else word)
    return " ".join(words)


def read_words_completions(
    train_targets: Sequence,
    train_expressions: Sequence[str],
    expressions: Sequence[str],
    *,
    moments: int,
    object_words: Collection[str],
    frame_times: Sequence,
) -> list[list[str]]:
    """The read-the-words baseline's answer for every expression: the prior frames of its
    template among the training expressions (of all of them for a template never seen);
    `frame_times` as for `ignore_video_completions`."""
    from omnir1.rl.warmstart import system1_answer

    by_template: dict[str, list] = defaultdict(list)
    for target, text in zip(train_targets, train_expressions, strict=True):
        by_template[expression_template(text, object_words)].append(target)
    overall = prior_frames(train_targets, moments)
    answers = []
    for text, times in zip(expressions, frame_times, strict=True):
        seen = by_template.get(expression_template(text, object_words))
        frames = prior_frames(seen, moments) if seen else overall
        answers.append([system1_answer(frames, text, moments, times)])
    return answers
