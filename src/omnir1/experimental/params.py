"""The params of research runs: the product's params.yaml plus research-only knobs.

`omnir1 study` and the scripts in research/ load params with `load_study_params` (params.yaml
with the recipes of research/recipes/ merged over it). The knobs below exist only here: they are
not keys of the product's params.yaml, not Kubeflow pipeline parameters, and no DVC stage reads
them.

- `system1.frames` / `system1.audio_first`: System 1's frames as timed images, the audio first;
- `models.tiny.rope_theta` / `mrope_section` / `digit_tokens`: rotary codes and tokenizer of the
  tiny thinkers the study builds per seed;
- `train.kinds` / `train.words`: GRPO (and the assessment) on a synthetic set's expressions of
  these kinds, naming one of these words;
- `warm_start.grounder_rendered`, `system1_rendered`, `system1_rendered_kinds`,
  `system1_stages`: warm-start examples on freshly rendered synthetic clips, and a curriculum of
  System-1 warm-start stages (omnir1.experimental.warmstart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from omnir1.config import (
    FinetuneParams,
    ModelParams,
    Params,
    System1Params,
    TinyParams,
    TrainParams,
    WarmStartParams,
    _Section,
    load_params,
)

ExpressionKind = Literal["appearance", "audio", "temporal", "multi"]
EXPRESSION_KINDS: tuple[ExpressionKind, ...] = ("appearance", "audio", "temporal", "multi")


def names_any(expression: str, words: Sequence[str]) -> bool:
    """Whether the expression has one of `words` as a word of its own (any case; no words:
    every expression does)."""
    wanted = {w.lower() for w in words}
    return not wanted or bool(wanted & set(expression.lower().split()))


class StudyTinyParams(TinyParams):
    # rotary codes and tokenizer of the tiny thinkers (omnir1.models.tiny.TinySizes)
    rope_theta: float = Field(1e6, gt=0)
    mrope_section: tuple[int, int, int] | None = None  # None: production proportions
    digit_tokens: bool = False

    def sizes(self):
        from omnir1.models.tiny import TinySizes

        return TinySizes(
            sam2_image_size=self.sam2_size,
            rope_theta=self.rope_theta,
            mrope_section=self.mrope_section,
            digit_tokens=self.digit_tokens,
        )


class StudyModelParams(ModelParams):
    tiny: StudyTinyParams = StudyTinyParams()


class StudySystem1Params(System1Params):
    # "images": each frame an image after its time in text (omnir1.systems.reasoning.frames_mode)
    frames: Literal["video", "images"] = "video"
    # with frames "images": the audio before the frames instead of after them
    audio_first: bool = False

    @model_validator(mode="after")
    def _audio_order_needs_images(self):
        if self.audio_first and self.frames != "images":
            raise ValueError("audio_first needs frames: images (a video interleaves its audio)")
        return self


class StudyTrainParams(TrainParams):
    # the kinds of a synthetic set's expressions GRPO trains on and `omnir1 study` assesses
    kinds: list[ExpressionKind] = Field(list(EXPRESSION_KINDS), min_length=1)
    # and of those, only expressions with one of these words ("red"); empty: any
    words: list[str] = Field(default_factory=list)


class System1StageParams(_Section):
    """One stage of System 1's warm-start curriculum: what it changes over `warm_start`'s
    System-1 settings. `kinds` and `words` choose the expressions it trains on, the set's own
    and the rendered ones alike (kinds of a synthetic set's expressions:
    omnir1.data.synth.expressions.expression_kind)."""

    steps: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    final_lr_ratio: float | None = Field(None, ge=0, le=1)
    train_vision: bool | None = None
    rendered: int | None = Field(None, ge=0)
    kinds: list[ExpressionKind] = Field(default_factory=list)
    # only expressions with one of these words ("red", "circle"); empty: any
    words: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class CurriculumStage:
    """A warm-start stage of System 1 with every setting filled in."""

    finetune: FinetuneParams
    rendered: int
    kinds: Sequence[str]
    words: Sequence[str] = ()
    filter_set: bool = False  # kinds and words choose the set's own expressions too

    @property
    def all_kinds(self) -> bool:
        return set(self.kinds) >= set(EXPRESSION_KINDS)

    def wants(self, expression: str, kind: str | None) -> bool:
        """Whether this stage trains on an expression of `kind` (None: unknown, a real data
        set's, which only a stage of every kind takes)."""
        if not (self.all_kinds if kind is None else kind in self.kinds):
            return False
        return names_any(expression, self.words)


class StudyWarmStartParams(WarmStartParams):
    # freshly drawn synthetic frames added to the grounder's examples (rendered_grounder_examples)
    grounder_rendered: int = Field(0, ge=0)
    # expressions on freshly rendered synthetic clips added to System 1's examples
    # (rendered_system1_examples), of these kinds (all: the generator's own mix)
    system1_rendered: int = Field(0, ge=0)
    system1_rendered_kinds: list[ExpressionKind] = Field(list(EXPRESSION_KINDS), min_length=1)
    # a curriculum: stages trained one after the other, each from the last one's weights
    # (empty: one stage, the settings above). A stage names what it changes; the rest comes
    # from `system1`, `system1_rendered` and `system1_rendered_kinds`.
    system1_stages: list[System1StageParams] = Field(default_factory=list)

    def system1_curriculum(self) -> list[CurriculumStage]:
        """System 1's warm-start stages, every setting filled in (one stage without
        `system1_stages`; then the set's own expressions of every kind)."""
        if not self.system1_stages:
            return [
                CurriculumStage(self.system1, self.system1_rendered, self.system1_rendered_kinds)
            ]
        stages = []
        for stage in self.system1_stages:
            given = stage.model_dump(exclude_none=True, exclude={"rendered", "kinds", "words"})
            stages.append(
                CurriculumStage(
                    self.system1.model_copy(update=given),
                    self.system1_rendered if stage.rendered is None else stage.rendered,
                    stage.kinds or self.system1_rendered_kinds,
                    stage.words,
                    filter_set=True,
                )
            )
        return stages


class StudyParams(Params):
    models: StudyModelParams = StudyModelParams()
    system1: StudySystem1Params = StudySystem1Params()
    warm_start: StudyWarmStartParams = StudyWarmStartParams()
    train: StudyTrainParams = StudyTrainParams()


def load_study_params(
    path: str | Path = "params.yaml", recipes: Sequence[str | Path] = ()
) -> StudyParams:
    """params.yaml with research recipes merged over it, validated with the research knobs."""
    return load_params(path, recipes, schema=StudyParams)
