"""Load a model folder (see `omnir1.models`) into the two systems' models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omnir1.errors import ConfigError
from omnir1.fsutil import inside, read_json


@dataclass(frozen=True)
class Manifest:
    root: Path
    name: str
    system1: Path
    grounder: Path
    sam2_config: str
    sam2_checkpoint: Path
    sam2_overrides: tuple[str, ...]

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        root = Path(root)
        path = root / "models.json"
        if not path.is_file():
            raise ConfigError(path, "model manifest not found (make one: omnir1 models init-tiny)")
        data = read_json(path)
        if not isinstance(data, dict):
            raise ConfigError(path, "expected an object")

        def folder(key: str) -> Path:
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(path, "expected a folder name relative to the manifest", key)
            target = inside(root, *value.split("/"), source=path, field=key)
            if not (target / "config.json").is_file():
                raise ConfigError(path, f"{target} has no config.json", key)
            return target

        system1, grounder = folder("system1"), folder("grounder")
        sam2 = data.get("sam2")
        if not isinstance(sam2, dict):
            raise ConfigError(path, "expected an object with config, checkpoint, overrides", "sam2")
        config, checkpoint = sam2.get("config"), sam2.get("checkpoint")
        overrides = sam2.get("overrides", [])
        if not isinstance(config, str) or not config.startswith("configs/"):
            raise ConfigError(path, "expected a config of the sam2 package", "sam2.config")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise ConfigError(path, "expected a checkpoint path", "sam2.checkpoint")
        ckpt = inside(root, *checkpoint.split("/"), source=path, field="sam2.checkpoint")
        if not ckpt.is_file():
            raise ConfigError(path, f"{ckpt} not found", "sam2.checkpoint")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(path, "expected a list of hydra overrides", "sam2.overrides")
        return cls(
            root=root,
            name=str(data.get("name", root.name)),
            system1=system1,
            grounder=grounder,
            sam2_config=config,
            sam2_checkpoint=ckpt,
            sam2_overrides=tuple(overrides),
        )


@dataclass
class Models:
    manifest: Manifest
    system1: object | None  # Qwen2_5OmniThinkerForConditionalGeneration; None in the service
    system1_processor: object | None  # Qwen2_5OmniProcessor
    grounder: object | None  # None when System 2 runs elsewhere (the service)
    grounder_processor: object | None
    sam2: object | None  # SAM2VideoPredictor


ATTENTION = ("sdpa", "flash_attention_2", "eager")


def check_attention(name: str | None) -> None:
    """An attention implementation this machine can run, or a ConfigError naming the setting."""
    import importlib.util

    if name is None:
        return
    if name not in ATTENTION:
        raise ConfigError(
            None,
            f"unknown attention {name!r}; choose one of {ATTENTION}",
            "system1.attn_implementation",
        )
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            None,
            "flash_attention_2 needs the flash-attn package, which is not installed here "
            "(use sdpa, or an image with flash-attn)",
            "system1.attn_implementation",
        )


def load_thinker(
    folder: Path, device: str = "cpu", dtype=None, attn_implementation: str | None = None
):
    """A thinker and its processor. `dtype` None keeps the stored dtype (bf16 for the published
    checkpoints); training asks for float32 master weights (`load_models(system1_dtype=...)`)."""
    from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

    check_attention(attn_implementation)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation
    )
    return model.to(device).eval(), Qwen2_5OmniProcessor.from_pretrained(folder)


def load_sam2(manifest: Manifest, device: str = "cpu"):
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor(
        manifest.sam2_config,
        ckpt_path=str(manifest.sam2_checkpoint),
        device=device,
        hydra_overrides_extra=list(manifest.sam2_overrides),
    )


def load_models(
    root: str | Path,
    *,
    device: str = "cpu",
    dtype=None,
    system2: bool = True,
    system1: bool = True,
    system1_dtype=None,
    attn_implementation: str | None = None,
) -> Models:
    """All models of a folder (a grounder in the same folder as System 1 is loaded separately,
    so that training System 1 never changes the frozen grounder). `system2=False` skips the
    grounder and SAM2, for clients of the System-2 service; `system1=False` skips System 1,
    for the service itself (the 7B thinker would hold ~15 GB of its GPU for nothing). `root`
    may be an s3:// prefix: it is mirrored into the local cache first (and only re-downloaded
    when it changed).
    `dtype`: of both thinkers (None: as stored); `system1_dtype`: System 1's alone (training:
    float32 masters); `attn_implementation`: params `system1.attn_implementation`."""
    from omnir1 import s3

    if s3.is_s3(root):
        root = s3.download_prefix(str(root), s3.cache_dir(str(root)))
    manifest = Manifest.read(root)
    thinker, processor = None, None
    if system1:
        thinker, processor = load_thinker(
            manifest.system1, device, system1_dtype or dtype, attn_implementation
        )
    if not system2:
        return Models(manifest, thinker, processor, None, None, None)
    grounder, grounder_processor = load_thinker(
        manifest.grounder, device, dtype, attn_implementation
    )
    for p in grounder.parameters():
        p.requires_grad_(False)
    sam2 = load_sam2(manifest, device)
    return Models(manifest, thinker, processor, grounder, grounder_processor, sam2)


def stored_dtype(folder: Path):
    """The torch dtype a model folder's config.json says its weights are stored in (None when
    it says nothing)."""
    import torch

    config = read_json(Path(folder) / "config.json")
    name = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return getattr(torch, name, None) if isinstance(name, str) else None


def check_thinker_folder(folder: Path) -> None:
    """System 1's folder must hold a thinker: from a full Qwen2.5-Omni snapshot, TRL would build
    GRPO's reference model as the full model (its config's architectures[0])."""
    from omnir1.models.importing import THINKER

    config = read_json(Path(folder) / "config.json")
    found = config.get("architectures") if isinstance(config, dict) else None
    if found and found[0] != THINKER:
        raise ConfigError(
            Path(folder) / "config.json",
            f"System 1 is a {found[0]}, not a {THINKER}: import the snapshot with "
            "`omnir1 models import` (which keeps its thinker)",
            "architectures",
        )


def check_master_weights(model, *, deepspeed: bool = False) -> None:
    """Refuse to train weights that would not learn: trainable weights below float32 under a
    plain optimiser (AdamW's steps at lr 1e-6 fall below bf16's resolution: the weights never
    change). DeepSpeed's bf16 mode keeps float32 masters of its own, so it may train them."""
    low = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad} - {"torch.float32"})
    if low and not deepspeed:
        raise ConfigError(
            None,
            f"trainable weights in {', '.join(low)} under a plain optimiser would not learn "
            "(updates below their resolution); load them in float32 (the training commands "
            "do) or train under DeepSpeed with bf16, which keeps float32 master weights",
            "train.bf16",
        )


def freeze_towers(model, *, vision: bool = False) -> None:
    """Train the language model only: the vision and audio towers stay as they are (docs/design.md
    §2), which also spares their backward pass. `vision` trains the vision tower too (the
    supervised warm starts of tiny random models may; GRPO never does)."""
    model.requires_grad_(True)
    model.model.audio_tower.requires_grad_(False)
    model.model.visual.requires_grad_(vision)


def part_saver(model, processor, dtype=None, state_dict=None) -> Callable[[Path], None]:
    """A `write_model_folder` part: saves `model` (or `state_dict`, its gathered weights) and its
    `processor` into the folder given; `dtype` (the base folder's stored dtype) casts the
    floating-point weights back from the float32 masters they were trained as."""

    def save(folder: Path) -> None:
        from omnir1.fsutil import write_json

        weights = state_dict
        if dtype is not None:
            weights = {
                k: v.to(dtype) if v.is_floating_point() else v
                for k, v in (weights if weights is not None else model.state_dict()).items()
            }
        model.save_pretrained(folder, state_dict=weights)
        processor.save_pretrained(folder)
        if dtype is not None:  # save_pretrained writes the dtype of the model in memory
            config = read_json(folder / "config.json")
            name = str(dtype).removeprefix("torch.")
            for section in (config, *(v for v in config.values() if isinstance(v, dict))):
                if "dtype" in section:
                    section["dtype"] = name
            write_json(folder / "config.json", config)

    return save


def write_model_folder(
    base: str | Path,
    out: str | Path,
    *,
    name: str,
    system1: Callable[[Path], None] | None = None,
    grounder: Callable[[Path], None] | None = None,
) -> Path:
    """A complete model folder at `out` derived from the folder `base`: `system1` / `grounder`
    (each a function that saves a model and its processor into the folder it is given) replace
    the base's parts; the parts not replaced are hard-linked from the base where the file system
    allows (they are read-only inputs). Written atomically: `out` is complete or absent."""
    from omnir1.fsutil import atomic_dir, write_json

    manifest = Manifest.read(base)
    with atomic_dir(Path(out)) as folder:
        for part, save, source in (
            ("system1", system1, manifest.system1),
            ("grounder", grounder, manifest.grounder),
        ):
            if save is None:
                link_tree(source, folder / part)
            else:
                save(folder / part)
        sam2 = folder / "sam2" / manifest.sam2_checkpoint.name
        sam2.parent.mkdir(parents=True)
        _link_file(manifest.sam2_checkpoint, sam2)
        write_json(
            folder / "models.json",
            {
                "name": name,
                "system1": "system1",
                "grounder": "grounder",
                "sam2": {
                    "config": manifest.sam2_config,
                    "checkpoint": f"sam2/{sam2.name}",
                    "overrides": list(manifest.sam2_overrides),
                },
                "base": manifest.name,
            },
        )
    return Path(out)


def link_tree(src: Path, dst: Path) -> None:
    """Copy a folder of read-only inputs by hard links (a copy where links are impossible)."""
    import shutil

    shutil.copytree(src, dst, copy_function=_link_file)


def _link_file(src, dst) -> None:
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
