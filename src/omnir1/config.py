"""params.yaml, typed: one validated view of every hyper-parameter.

Unknown keys and wrong types are errors that name the file and the dotted field (a typo must
not silently fall back to a default). The library takes these sections as they are (one home
per setting): GlobalReasoner a System1Params, the Grounder a GrounderParams, the rewards a
VideoAccuracyParams, the validate stage a ValidateParams. This module imports nothing else of the
package: it is the bottom of the dependency graph.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from omnir1.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# fields that may carry a URL: a wrong value is reported without echoing it, and credentials in
# them are refused (params.yaml is committed, and any key can be a Kubeflow run's override)
_URL_FIELDS = {"tracking.uri", "remote.url", "remote.endpoint_url"}


def _no_credentials(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:  # e.g. an invalid port: not ours to judge here
        return url
    if password is not None:
        raise ValueError(
            "credentials do not belong in params files: give them in the environment "
            "(MLFLOW_TRACKING_URI / MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), from a Kubernetes Secret in the cluster"
        )
    return url


class SynthParams(_Section):
    videos: int = Field(24, ge=1, le=100_000)
    seed: int = 0
    workers: int = Field(2, ge=1)
    background: Literal["gradient", "position", "timecode"] = (
        "gradient"  # data.synth.scene.BACKGROUND_STYLES
    )
    object_scale: float = Field(1.0, ge=0.2, le=3.0)  # shapes' radii x this
    visit_fraction: float = Field(0.0, ge=0.0, le=1.0)  # objects only briefly in view
    layout: Literal["free", "turns"] = "free"  # data.synth.generate.LAYOUTS
    duration_s: float = Field(10.0, ge=2.0, le=600.0)  # per video


class DataParams(_Section):
    # "synth", an s3://bucket/prefix URL or a folder (omnir1 data fetch); `sources` per format
    source: str = Field("synth", min_length=1)
    sources: dict[Literal["refavs", "revos", "mevis"], str] = {}
    formats: list[Literal["refavs", "revos", "mevis"]] = ["refavs", "revos", "mevis"]
    synth: SynthParams = SynthParams()
    train_format: Literal["refavs", "revos", "mevis"] = "revos"  # the data set GRPO trains on


class ValidateParams(_Section):
    """Bounds of the validate stage (omnir1.data.validate): what a data set must hold before
    anything trains on it."""

    min_frames: int = Field(2, ge=1)
    max_frames: int = Field(10_000, ge=1)
    frames_per_video: dict[Literal["refavs", "revos", "mevis"], int] = {"refavs": 10}
    min_width: int = Field(64, ge=1)
    max_width: int = Field(4096, ge=1)
    min_height: int = Field(64, ge=1)
    max_height: int = Field(4096, ge=1)
    min_fps: float = Field(0.5, gt=0)
    max_fps: float = Field(120.0, gt=0)
    min_duration_s: float = Field(1.0, ge=0)
    max_duration_s: float = Field(600.0, gt=0)
    require_audio: bool = True
    audio_sample_rate: int = Field(16_000, ge=1)
    max_av_drift_s: float = Field(1.0, ge=0)
    max_mask_area: float = Field(0.95, gt=0, le=1)
    splits: dict[Literal["refavs", "revos", "mevis"], list[str]] = {
        "refavs": ["train", "test_s", "test_u", "test_n"],
        "revos": ["train", "valid"],
        "mevis": ["train", "valid_u"],
    }
    train_split: str = "train"
    min_train_fraction: float = Field(0.4, ge=0, le=1)
    max_train_fraction: float = Field(0.95, ge=0, le=1)
    examples: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> ValidateParams:
        pairs = [
            ("frames", self.min_frames, self.max_frames),
            ("width", self.min_width, self.max_width),
            ("height", self.min_height, self.max_height),
            ("fps", self.min_fps, self.max_fps),
            ("duration_s", self.min_duration_s, self.max_duration_s),
            ("train_fraction", self.min_train_fraction, self.max_train_fraction),
        ]
        for name, low, high in pairs:
            if low > high:
                raise ValueError(f"min_{name} {low} is above max_{name} {high}")
        return self


class PreprocessParams(_Section):
    """Shards of decoded videos (omnir1.data.preprocess); what they hold is set by `system1`."""

    workers: int = Field(2, ge=1)  # worker processes, one video each at a time
    prefer: Literal["frames", "video"] = "frames"  # source where a video has both


class TinyParams(_Section):
    seed: int = 0
    sam2_size: int = Field(256, ge=64, multiple_of=16)


EMBEDDED_MODELS = "models/tiny"  # models.dir of the embedded default: built, not fetched


class ModelParams(_Section):
    dir: str = EMBEDDED_MODELS
    tiny: TinyParams = TinyParams()


class System1Params(_Section):
    fps: float = Field(2.0, gt=0)
    max_frames: int = Field(24, ge=1)
    max_pixels: int = Field(128 * 28 * 28, ge=28 * 28)  # one 28 px token per frame at least
    moments: int = Field(4, ge=1)
    max_keyframes: int = Field(4, ge=1)
    max_moments: int = Field(64, ge=1)  # objects read from an answer; more: no answer
    max_new_tokens: int = Field(800, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    # "compact": the task in few words, no example answer (prompts.SYSTEM1_TASK_COMPACT)
    prompt: Literal["release", "compact"] = "release"
    # false: System 1 gets the frames only (omnir1.systems.reasoning); real ReVOS / MeViS have none
    audio: bool = True
    # attention kernels of both thinkers (System 1, the grounder): flash_attention_2 needs the
    # flash-attn package and a GPU; under sdpa the vision tower loops over its windows in Python
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = "sdpa"


class GrounderParams(_Section):
    """How System 2's grounder sees a keyframe (omnir1.systems.grounding.Grounder)."""

    max_pixels: int = Field(900 * 28 * 28, ge=4 * 28 * 28)
    min_pixels: int = Field(4 * 28 * 28, ge=28 * 28)
    max_new_tokens: int = Field(128, ge=1)
    max_boxes: int = Field(16, ge=1)
    batch_size: int = Field(16, ge=1)  # grounding requests per generate call


class VideoAccuracyParams(_Section):
    """Weights of the video accuracy terms (docs/design.md §2; cumulated and the mismatch
    penalty are unweighted)."""

    a_k: float = Field(1.0, allow_inf_nan=False)  # keyframe count and diversity (frame + overlap)
    a_k_ratio: float = Field(0.0, allow_inf_nan=False)  # saliency of the keyframes
    a_a: float = Field(1.0, allow_inf_nan=False)  # box accuracy (matched IoU)
    a_g: float = Field(2.0, allow_inf_nan=False)  # SAM2 J; 0 skips the term
    clip_to_cumulated: bool = False


def check_sam2_every(sam2_every: int, a_g: float) -> None:
    """SAM2 may skip groups (rewards.sam2_every > 1) only while its J weighs nothing (a_g 0):
    otherwise a skipped group would be scored without a term of its reward."""
    if sam2_every < 1:
        raise ValueError(f"sam2_every must be >= 1, got {sam2_every}")
    if sam2_every > 1 and a_g != 0:
        raise ValueError(
            f"sam2_every {sam2_every} needs video_accuracy.a_g 0: SAM2's J is part of the reward "
            f"(a_g {a_g}), so every group must be segmented"
        )


class RewardParams(_Section):
    """The GRPO rewards (docs/design.md §2): registered rewards by name
    (omnir1.rl.rewards.REWARDS), each with its weight in the total (TRL's `reward_weights`)."""

    names: list[str] = ["format", "video_accuracy"]
    # a reward's weight in the total reward GRPO maximises; a name not listed weighs 1
    weights: dict[str, float] = {}
    # the terms of the video accuracy reward
    video_accuracy: VideoAccuracyParams = VideoAccuracyParams()
    system2_retries: int = Field(2, ge=0)
    # SAM2 on every Nth group only; allowed only with video_accuracy.a_g 0 (its J then weighs
    # nothing, and is logged on the groups it runs on)
    sam2_every: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _consistent(self):
        unknown = [n for n in self.weights if n not in self.names]
        if unknown:
            raise ValueError(f"weights of rewards not in names: {unknown} (names: {self.names})")
        if not all(math.isfinite(w) for w in self.weights.values()):
            raise ValueError("reward weights must be finite numbers")
        check_sam2_every(self.sam2_every, self.video_accuracy.a_g)
        return self

    def reward_weights(self) -> list[float]:
        """Each of `names`' weight, in order (TRL's GRPOConfig.reward_weights)."""
        return [self.weights.get(name, 1.0) for name in self.names]


class TrainParams(_Section):
    num_generations: int = Field(8, ge=2)
    beta: float = Field(0.04, ge=0)
    learning_rate: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    lr_scheduler_type: str = "cosine"
    num_train_epochs: float = Field(1, gt=0)
    max_steps: int = -1
    max_completion_length: int = Field(800, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    prompts_per_step: int = Field(1, ge=1)
    # advantages = (reward - group mean) / this scale: "group" (the paper's), "batch" or "none"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    optim: Literal["adamw_torch", "sgd"] = "adamw_torch"
    gradient_checkpointing: bool = True
    bf16: bool = True
    save_steps: int = Field(50, ge=1)
    seed: int = 0
    # > 1: one process per GPU under `accelerate launch` with this config (omnir1.rl.launch)
    gpus_per_node: int = Field(1, ge=1)
    accelerate_config: str = "configs/accelerate/multi_gpu.yaml"

    def grpo_config(
        self,
        output_dir: str | Path,
        *,
        use_cpu: bool,
        suppress_tokens=None,
        reward_weights: Sequence[float] | None = None,
    ):
        """TRL's GRPOConfig for the paper's recipe: GRPO loss (token mean per completion, then
        batch mean), advantages scaled as `scale_rewards` says (the paper: by the group's std),
        one optimisation step per generation batch (so the ratio clip never binds), the k3 KL
        against the frozen reference, the optimiser `optim` (the paper: AdamW)."""
        from trl import GRPOConfig

        # DeepSpeed on CPU (the 2-process tests): accelerate's CPU mode never initialises
        # deepspeed.comm, which ZeRO-3 needs before TRL builds the reference model under
        # zero.Init. Outside CPU mode accelerate needs the backend named (gloo) to count the
        # processes; DeepSpeed then runs on its CPU accelerator.
        launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        ds_cpu = use_cpu and launched
        # plain DDP ranks on CPU (`train.gpus_per_node` processes in a test): a gloo group in
        # accelerate's CPU mode, or each rank would train alone
        ddp_cpu = use_cpu and not launched and int(os.environ.get("WORLD_SIZE", "1")) > 1
        return GRPOConfig(
            output_dir=str(output_dir),
            use_cpu=use_cpu and not ds_cpu,
            ddp_backend="gloo" if ds_cpu or ddp_cpu else None,
            bf16=self.bf16 and not use_cpu,
            loss_type="grpo",
            scale_rewards=self.scale_rewards,
            optim=self.optim,
            num_generations=self.num_generations,
            per_device_train_batch_size=self.num_generations * self.prompts_per_step,
            steps_per_generation=1,
            num_iterations=1,
            beta=self.beta,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            lr_scheduler_type=self.lr_scheduler_type,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            max_completion_length=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            activation_checkpointing=self.gradient_checkpointing and not use_cpu,
            save_strategy="steps",
            save_steps=self.save_steps,
            logging_steps=1,
            seed=self.seed,
            report_to=[],
            generation_kwargs={"suppress_tokens": list(suppress_tokens or [])},
            # the frozen reference in the compute dtype (the policy's masters are float32)
            model_init_kwargs={"dtype": "bfloat16"} if self.bf16 and not use_cpu else None,
            reward_weights=None if reward_weights is None else list(reward_weights),
        )


class FinetuneParams(_Section):
    steps: int = Field(0, ge=0)  # 0: this system is not warm-started
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    # linear decay to this fraction of the lr: a constant lr can unlearn (docs/design.md §7)
    final_lr_ratio: float = Field(0.05, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    train_vision: bool = False  # the vision tower too (GRPO keeps it frozen)


class WarmStartParams(_Section):
    """Supervised starts on answers derived from the ground truth (omnir1.rl.warmstart): what
    tiny, randomly initialised models need before GRPO can see a reward. Production models
    start from pretrained weights and skip them (steps 0)."""

    grounder: FinetuneParams = FinetuneParams()
    grounder_frame_stride: int = Field(3, ge=1)  # every Nth frame of a video gives an example
    system1: FinetuneParams = FinetuneParams()


class EvaluateParams(_Section):
    """The evaluate stage (omnir1 benchmark): trained vs untrained System 1 with System 2."""

    videos_per_split: int | None = Field(None, ge=1)  # first N videos; None: whole splits
    system1_batch_size: int = Field(8, ge=1)  # expressions per generate call
    workers: int = Field(1, ge=1)  # scoring processes


class ProbeParams(_Section):
    """The probe stage (omnir1 probe): hallucination probes built from the data sets' own
    annotations (omnir1.eval.probe)."""

    max_videos: int | None = Field(None, ge=1)  # per data set; None: every evaluated video
    questions_per_video: int = Field(2, ge=1)  # per probe family and answer (yes / no)
    max_new_tokens: int = Field(16, ge=1)  # a yes/no answer needs few tokens
    seed: int = 0


class TrackingParams(_Section):
    enabled: bool = True
    uri: str = "sqlite:///mlruns.db"  # MLFLOW_TRACKING_URI wins when set
    experiment: str = "omnir1"
    # an unreachable server during training: keep the metrics and send them when it answers
    # again ("buffer"), or stop training with an error ("fail")
    on_unavailable: Literal["buffer", "fail"] = "buffer"

    _uri = field_validator("uri")(_no_credentials)


class RegisterParams(_Section):
    """Model registry gates (omnir1.registry): a new version gets the alias `challenger` and
    becomes `champion` when no gated metric is worse than the champion's by more than its
    tolerance. Names are the metrics `omnir1 register` logs: NAME.dotted.path for each
    `--metrics NAME=FILE` (characters MLflow rejects, such as &, become _)."""

    model_name: str = Field("omnir1-system1", min_length=1)
    # absolute, on metrics that are fractions in [0, 1]: about one point of J&F, the noise of
    # re-evaluating a sampled policy on a few hundred expressions
    tolerance: float = Field(0.01, ge=0)
    tolerances: dict[str, float] = {}  # per-metric overrides of `tolerance`
    # the trained model's figures of the evaluate and probe stages (omnir1 benchmark, omnir1
    # probe); a data set a run does not evaluate needs its gates removed (a gated metric
    # missing from the challenger refuses promotion)
    higher_is_better: list[str] = [
        "eval.trained.revos.JF",
        "eval.trained.mevis.JF",
        "eval.trained.refavs.seen.mIoU",
        "eval.trained.refavs.unseen.mIoU",
        "probe.trained.avh.accuracy",
        "probe.trained.cmm.pa",
        "probe.trained.cmm.hr",
    ]
    lower_is_better: list[str] = ["eval.trained.refavs.null.S"]
    # the distance to a target is gated (lower is better): a yes-ratio of 0.5 on balanced
    # probes, so that neither always-yes nor always-no passes
    closer_to: dict[str, float] = {"probe.trained.avh.yes_ratio": 0.5}
    # gated with tolerance 0: a hallucination metric may not get worse at all
    hallucination: list[str] = [
        "probe.trained.avh.accuracy",
        "probe.trained.avh.yes_ratio",
        "probe.trained.cmm.hr",
        "eval.trained.refavs.null.S",
    ]
    # every gate is also checked against the model training started from: its figures sit under
    # this label where the challenger's sit under `challenger_label` (eval.untrained.revos.JF
    # beside eval.trained.revos.JF); null: compare with the champion only
    start_label: str | None = Field("untrained", pattern=r"^[\w-]+$")
    challenger_label: str = Field("trained", pattern=r"^[\w-]+$")

    @model_validator(mode="after")
    def _consistent(self) -> RegisterParams:
        import re

        gated = [*self.higher_is_better, *self.lower_is_better, *self.closer_to]
        bad = [m for m in gated if not re.fullmatch(r"[\w.\- :]+", m)]
        if bad:
            raise ValueError(f"metric names MLflow would reject: {bad} (letters, digits, _.- :)")
        twice = sorted({m for m in gated if gated.count(m) > 1})
        if twice:
            raise ValueError(f"metrics gated in more than one direction: {twice}")
        named = {"hallucination": self.hallucination, "tolerances": list(self.tolerances)}
        for field, names in named.items():
            unknown = [m for m in names if m not in gated]
            if unknown:
                raise ValueError(f"{field} names metrics that are not gated: {unknown}")
        loose = [m for m in self.hallucination if self.tolerances.get(m, 0) > 0]
        if loose:
            raise ValueError(f"hallucination metrics take no tolerance: {loose}")
        if any(t < 0 for t in self.tolerances.values()):
            raise ValueError("tolerances must be >= 0")
        return self


class RemoteParams(_Section):
    """The DVC remote on S3 (omnir1.dvcremote). OMNIR1_DVC_REMOTE_URL and AWS_ENDPOINT_URL
    override `url` and `endpoint_url`; credentials come from the environment only, so this
    section has no key for them."""

    name: str = Field("storage", pattern=r"^[A-Za-z0-9_-]+$")
    url: str = Field("s3://omnir1-dvc/cache", pattern=r"^s3://[^/]+")
    endpoint_url: str = Field("", pattern=r"^(https?://.+)?$")  # empty: AWS's own endpoint

    _urls = field_validator("url", "endpoint_url")(_no_credentials)


class Params(_Section):
    data: DataParams = DataParams()
    # `validate` would shadow BaseModel.validate: the YAML key is an alias
    validation: ValidateParams = Field(ValidateParams(), alias="validate")
    preprocess: PreprocessParams = PreprocessParams()
    models: ModelParams = ModelParams()
    system1: System1Params = System1Params()
    grounder: GrounderParams = GrounderParams()
    rewards: RewardParams = RewardParams()
    warm_start: WarmStartParams = WarmStartParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    probe: ProbeParams = ProbeParams()
    tracking: TrackingParams = TrackingParams()
    # `register` would shadow ABCMeta.register of pydantic's metaclass: the YAML key is an alias
    registry: RegisterParams = Field(RegisterParams(), alias="register")
    remote: RemoteParams = RemoteParams()


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a folder, not a params file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(path, f"invalid YAML ({exc.__class__.__name__}: {exc})") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read ({exc.strerror or exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "expected a mapping of sections")
    return raw


def _merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_params(
    path: str | Path = "params.yaml",
    recipes: Sequence[str | Path] = (),
    schema: type[Params] | None = None,
):
    """params.yaml, with each recipe file (e.g. configs/params/refavs.yaml) merged over it key
    by key; errors name the file whose value is wrong. `schema`: a subclass of Params that
    adds keys (research's StudyParams); by default the product's own."""
    path = Path(path)
    raw = _read_yaml(path)
    source = path
    for recipe in map(Path, recipes):
        raw = _merge(raw, _read_yaml(recipe))
        source = recipe
    try:
        params = (schema or Params).model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        got = "" if field in _URL_FIELDS else f" (got {first.get('input')!r})"
        raise ConfigError(source, f"{first['msg']}{got}", field) from None
    return params
