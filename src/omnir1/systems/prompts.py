"""Prompts of the two systems (docs/design.md §2).

System 1 gets the video (frames at 2 fps, the audio track interleaved), the expression and the
instructions: think, then answer about four moments where the target is clear as JSON objects
with `mm:ss.ff` times and a single-frame description. The example in the instructions uses
random times inside the clip, so that a policy cannot score by copying a fixed example.

The grounder (System 2) gets one keyframe and one description and answers boxes in the
Qwen2.5-VL `bbox_2d` convention.
"""

from __future__ import annotations

import json
import random

# The Qwen2.5-Omni multimodal markers, by the tokenizer attribute that names each one
MULTIMODAL_TOKENS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_token": "<|AUDIO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}


def marker_token_ids(tokenizer) -> list[int]:
    """Ids of the multimodal markers. A randomly initialised (or badly trained) model may sample
    them, which would make it look for features that do not exist: generation suppresses them."""
    return [tokenizer.convert_tokens_to_ids(t) for t in MULTIMODAL_TOKENS.values()]


SYSTEM1_SYSTEM = (
    "You are a helpful assistant that watches videos and listens to their audio carefully."
)

SYSTEM1_TASK = (
    'Find the target described by the expression "{expression}" in this video and its audio. '
    "First think step by step inside <think> </think>. Then, inside <answer> </answer>, give a "
    "JSON list of about {moments} moments in which the target is clearly visible. Each moment is "
    '{{"start_time": "mm:ss.ff", "end_time": "mm:ss.ff", "description": "..."}}: a time range '
    "within the video ({duration} long) and a description that identifies the target in a "
    "single frame, by appearance and position only, without words about time or order. "
    "Example: <answer>{example}</answer>"
)

# The same task in few words, without the example answer (~180 fewer tokens) for the
# tiny embedded models, whose steps cost in proportion to the prompt (system1.prompt: compact)
SYSTEM1_TASK_COMPACT = (
    'Find "{expression}" in this video ({duration} long) and its audio. Think inside <think> '
    "</think>, then answer inside <answer> </answer> with a JSON list of about {moments} moments "
    'where it is visible: {{"start_time": "mm:ss.ff", "end_time": "mm:ss.ff", "description": '
    '"..."}}.'
)

GROUNDER_TASK = (
    'Locate "{description}" in the image and output the bounding box of every such object as '
    'JSON: [{{"bbox_2d": [x1, y1, x2, y2], "label": "..."}}].'
)

EXAMPLE_DESCRIPTIONS = (
    "the red ball on the left",
    "the small dog in the middle",
    "the person wearing a blue shirt",
    "the large grey car near the top",
)


def format_time(seconds: float) -> str:
    """`mm:ss.ff` (ff = hundredths), the answer's time format."""
    hundredths = max(0, round(seconds * 100))
    minutes, rest = divmod(hundredths, 6000)
    return f"{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def example_answer(duration_s: float, rng: random.Random, moments: int = 4) -> str:
    """An answer in the required format with random, ordered, non-overlapping times."""
    items = []
    cuts = sorted(rng.uniform(0, duration_s) for _ in range(2 * moments))
    for k in range(moments):
        start, end = cuts[2 * k], cuts[2 * k + 1]
        items.append(
            {
                "start_time": format_time(start),
                "end_time": format_time(end),
                "description": EXAMPLE_DESCRIPTIONS[k % len(EXAMPLE_DESCRIPTIONS)],
            }
        )
    return json.dumps(items)


def system1_task(
    expression: str,
    duration_s: float,
    rng: random.Random,
    moments: int = 4,
    *,
    compact: bool = False,
) -> str:
    fields = {
        "expression": expression.replace('"', "'"),
        "moments": moments,
        "duration": format_time(duration_s),
    }
    if compact:
        return SYSTEM1_TASK_COMPACT.format(**fields)
    return SYSTEM1_TASK.format(**fields, example=example_answer(duration_s, rng, moments))


def grounder_task(description: str) -> str:
    return GROUNDER_TASK.format(description=description.replace('"', "'"))


def corpus_examples(n: int = 200, seed: int = 0) -> list[str]:
    """Texts in the shape of our prompts and answers, to train the tiny models' tokenizer."""
    from omnir1.data.synth.scene import COLORS, SEEN_SHAPES, SIZES, SOUNDS, UNSEEN_SHAPES

    rng = random.Random(seed)
    shapes = [*SEEN_SHAPES, *UNSEEN_SHAPES]
    words = [*shapes, *COLORS, *SIZES, *SOUNDS]
    texts = [SYSTEM1_SYSTEM, " ".join(words)]
    for _ in range(n):
        desc = f"the {rng.choice(list(SIZES))} {rng.choice(list(COLORS))} {rng.choice(shapes)}"
        duration = rng.uniform(2, 30)
        texts.append(system1_task(desc, duration, rng))
        box = sorted(rng.randint(0, 900) for _ in range(4))
        texts.append(grounder_task(desc))
        texts.append(json.dumps([{"bbox_2d": box, "label": desc}]))
        texts.append(f"<think>{desc} makes a sound and moves.</think>")
        texts.append(f"<answer>{example_answer(duration, rng)}</answer>")
    return texts
