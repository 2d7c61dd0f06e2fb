"""`omnir1 models import`: a model folder from checkpoints as they are published.

- System 1 from a Hugging Face snapshot of Qwen2.5-Omni (the full model: thinker, talker and
  token2wav in sharded safetensors, with the processor's files): the thinker's tensors are
  copied shard by shard (one shard in memory at a time; the shard names are kept, shards without
  thinker tensors are left out), under the thinker's own names, with the thinker's config
  (`architectures` = Qwen2_5OmniThinkerForConditionalGeneration, so that TRL builds GRPO's
  reference model as the thinker, not as the full model) and every processor file. A snapshot
  that already is a thinker is copied as it is.
- SAM2 from a checkpoint as Meta ships it (`{"model": state_dict}` .pt, read with
  weights_only) and the name of its config in the sam2 package.
- models.json (the manifest `omnir1.models.loading` reads; the grounder is System 1, the frozen
  base model) with the sha256 of every file written.

Written atomically: OUT is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from omnir1.errors import ConfigError, DataError
from omnir1.fsutil import atomic_dir, read_json, write_json

THINKER = "Qwen2_5OmniThinkerForConditionalGeneration"
THINKER_TYPE = "qwen2_5_omni_thinker"
PREFIX = "thinker."
INDEX = "model.safetensors.index.json"
# files of a snapshot that are not the thinker's processor: the model's config, the weights'
# index, the talker's speakers
_MODEL_FILES = ("config.json", INDEX, "spk_dict.pt")


def _weight_map(snapshot: Path) -> dict[str, str]:
    """tensor name -> shard file of a snapshot (sharded with an index, or one file)."""
    index = snapshot / INDEX
    if index.is_file():
        data = read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise DataError(index, "expected a non-empty weight_map", "weight_map")
        for shard in set(weight_map.values()):
            if not isinstance(shard, str) or "/" in shard or not (snapshot / shard).is_file():
                raise DataError(index, f"shard {shard!r} is not a file of the snapshot")
        return weight_map
    single = snapshot / "model.safetensors"
    if not single.is_file():
        raise DataError(snapshot, f"no {INDEX} and no model.safetensors: not a snapshot")
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return dict.fromkeys(f.keys(), single.name)


def thinker_config(snapshot: Path) -> tuple[dict, str]:
    """(the thinker's config.json, the prefix of its tensors) of a snapshot."""
    path = snapshot / "config.json"
    if not path.is_file():
        raise DataError(path, "not found: not a Hugging Face snapshot")
    config = read_json(path)
    if not isinstance(config, dict):
        raise DataError(path, "expected an object")
    if config.get("model_type") == THINKER_TYPE:
        return config, ""
    thinker = config.get("thinker_config")
    if config.get("model_type") != "qwen2_5_omni" or not isinstance(thinker, dict):
        raise DataError(
            path,
            f"model_type {config.get('model_type')!r} is not a Qwen2.5-Omni model",
            "model_type",
        )
    dtype = config.get("dtype") or config.get("torch_dtype")
    thinker = {**thinker, "architectures": [THINKER], "model_type": THINKER_TYPE}
    if dtype and not (thinker.get("dtype") or thinker.get("torch_dtype")):
        thinker["dtype"] = dtype
    return thinker, PREFIX


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_thinker(snapshot: Path, target: Path) -> dict:
    """The thinker's config, weights (shard by shard) and processor files into `target`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config, prefix = thinker_config(snapshot)
    weight_map = _weight_map(snapshot)
    target.mkdir(parents=True)
    new_map: dict[str, str] = {}
    total = 0
    for shard in sorted(set(weight_map.values())):
        names = [k for k, s in weight_map.items() if s == shard and k.startswith(prefix)]
        if not names:
            continue  # a talker / token2wav shard
        with safe_open(str(snapshot / shard), "pt") as f:
            tensors = {k[len(prefix) :]: f.get_tensor(k) for k in names}
        save_file(tensors, str(target / shard), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            new_map[name] = shard
            total += tensor.numel() * tensor.element_size()
    if not new_map:
        raise DataError(snapshot, f"no thinker tensors (names starting {prefix!r}) in the snapshot")
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(new_map.items()))}
    (target / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    (target / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    weights = set(weight_map.values())
    for path in sorted(snapshot.iterdir()):  # the processor: tokenizer, chat template, ...
        if path.is_file() and path.name not in _MODEL_FILES and path.name not in weights:
            shutil.copy2(path, target / path.name)
    # the Hub's snapshots have preprocessor_config.json; transformers 5 writes processor_config
    if not any(
        (target / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")
    ):
        raise DataError(
            snapshot, "no (pre)processor_config.json: the processor's files are missing"
        )
    return {"tensors": len(new_map), "bytes": total, "from_full_model": bool(prefix)}


def _check_sam2(checkpoint: Path, config: str) -> None:
    import importlib.resources

    import torch

    if not config.startswith("configs/") or not config.endswith(".yaml"):
        raise ConfigError(None, f"{config!r} is not a config of the sam2 package", "--sam2-config")
    if not importlib.resources.files("sam2").joinpath(config).is_file():
        raise ConfigError(None, f"the sam2 package has no config {config!r}", "--sam2-config")
    if not checkpoint.is_file():
        raise DataError(checkpoint, "SAM2 checkpoint not found")
    try:
        state = torch.load(checkpoint, map_location="meta", weights_only=True)
    except Exception as exc:  # any unreadable file is the same user error
        raise DataError(checkpoint, f"not a SAM2 checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise DataError(checkpoint, 'expected {"model": state_dict}, as Meta ships SAM2', "model")


def import_models(
    snapshot: str | Path,
    out: str | Path,
    *,
    sam2_checkpoint: str | Path,
    sam2_config: str,
    sam2_overrides: list[str] | None = None,
    name: str | None = None,
) -> dict:
    """A model folder at `out` from a Qwen2.5-Omni snapshot and a SAM2 checkpoint; returns the
    manifest (see the module docstring)."""
    snapshot, sam2_checkpoint = Path(snapshot), Path(sam2_checkpoint)
    if not snapshot.is_dir():
        raise DataError(snapshot, "not a folder (a Hugging Face snapshot of Qwen2.5-Omni)")
    _check_sam2(sam2_checkpoint, sam2_config)
    with atomic_dir(Path(out)) as folder:
        summary = _copy_thinker(snapshot, folder / "system1")
        sam2 = folder / "sam2" / sam2_checkpoint.name
        sam2.parent.mkdir()
        shutil.copy2(sam2_checkpoint, sam2)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        manifest = {
            "name": name or snapshot.name,
            "system1": "system1",
            "grounder": "system1",
            "sam2": {
                "config": sam2_config,
                "checkpoint": f"sam2/{sam2.name}",
                "overrides": list(sam2_overrides or []),
            },
            "imported": {"system1": str(snapshot), "sam2": str(sam2_checkpoint), **summary},
            "sha256": {str(p.relative_to(folder)): _sha256(p) for p in files},
        }
        write_json(folder / "models.json", manifest)
    return manifest
