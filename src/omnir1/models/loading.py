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
    system1: object  # Qwen2_5OmniThinkerForConditionalGeneration
    system1_processor: object  # Qwen2_5OmniProcessor
    grounder: object | None  # None when System 2 runs elsewhere (the service)
    grounder_processor: object | None
    sam2: object | None  # SAM2VideoPredictor


def load_thinker(folder: Path, device: str = "cpu", dtype=None):
    from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder, dtype=dtype)
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
    root: str | Path, *, device: str = "cpu", dtype=None, system2: bool = True
) -> Models:
    """All models of a folder (a grounder in the same folder as System 1 is loaded separately,
    so that training System 1 never changes the frozen grounder). `system2=False` skips the
    grounder and SAM2, for clients of the System-2 service. `root` may be an s3:// prefix: it
    is mirrored into the local cache first (and only re-downloaded when it changed)."""
    from omnir1 import s3

    if s3.is_s3(root):
        root = s3.download_prefix(str(root), s3.cache_dir(str(root)))
    manifest = Manifest.read(root)
    system1, processor = load_thinker(manifest.system1, device, dtype)
    if not system2:
        return Models(manifest, system1, processor, None, None, None)
    grounder, grounder_processor = load_thinker(manifest.grounder, device, dtype)
    for p in grounder.parameters():
        p.requires_grad_(False)
    sam2 = load_sam2(manifest, device)
    return Models(manifest, system1, processor, grounder, grounder_processor, sam2)


def freeze_towers(model, *, vision: bool = False) -> None:
    """Train the language model only: the vision and audio towers stay as they are (docs/design.md
    §2), which also spares their backward pass. `vision` trains the vision tower too (the
    supervised warm starts of tiny random models may; GRPO never does)."""
    model.requires_grad_(True)
    model.model.audio_tower.requires_grad_(False)
    model.model.visual.requires_grad_(vision)


def part_saver(model, processor) -> Callable[[Path], None]:
    """A `write_model_folder` part: saves `model` and its `processor` into the folder given."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

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
