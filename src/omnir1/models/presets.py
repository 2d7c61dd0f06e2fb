"""Models of the real sizes with random weights, built here (nothing is downloaded): the
Qwen2.5-Omni-3B and -7B thinkers and the SAM2.1 hiera-t/s/b+/l video predictors, so that
memory, dtype and speed can be checked at the sizes users run (`omnir1 models init --preset`).

The thinker presets are the dimensions of the published checkpoints' `thinker_config` (text,
vision and audio towers); the tokenizer is the tiny one of `omnir1.models.tiny` (random weights
answer nothing meaningful either way), its ids inside the real vocabulary. On the meta device a
preset costs no memory: `parameter_counts` counts it (tests/unit/test_presets.py checks the
counts against the published sizes). Written folders have the layout and manifest of
`omnir1 models init-tiny` and load through `omnir1.models.loading` like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omnir1.errors import ConfigError

# the vision and audio towers of both sizes (Qwen2.5-VL's ViT, Whisper-large-v3's encoder)
_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "window_size": 112,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}
_AUDIO = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "n_window": 100,
}


@dataclass(frozen=True)
class ThinkerPreset:
    """The language model's dimensions; the towers are `_VISION` and `_AUDIO`, projected to
    `hidden`. `published_lm` is the parameter count of the Qwen2.5 language model it is
    (Qwen2.5 technical report: 3.09 B and 7.61 B)."""

    vocab: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    tie_embeddings: bool
    published_lm: float


THINKERS = {
    "qwen2.5-omni-3b": ThinkerPreset(151936, 2048, 11008, 36, 16, 2, True, 3.09e9),
    "qwen2.5-omni-7b": ThinkerPreset(152064, 3584, 18944, 28, 28, 4, False, 7.61e9),
}
# SAM2.1 configs of the sam2 package and their published sizes (the SAM2 README, in millions)
SAM2 = {
    "hiera-t": ("configs/sam2.1/sam2.1_hiera_t.yaml", 38.9e6),
    "hiera-s": ("configs/sam2.1/sam2.1_hiera_s.yaml", 46.0e6),
    "hiera-b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", 80.8e6),
    "hiera-l": ("configs/sam2.1/sam2.1_hiera_l.yaml", 224.4e6),
}
# what the published vision and audio towers hold (Qwen2.5-VL report: a 675 M ViT; Whisper
# large-v3's encoder, 32 layers of width 1280: about 635 M), for the counting test
PUBLISHED_VISION = 675e6
PUBLISHED_AUDIO = 635e6


def _choice(table: dict, name: str, flag: str):
    if name not in table:
        raise ConfigError(None, f"unknown preset {name!r}; choose one of {sorted(table)}", flag)
    return table[name]


def thinker_config(preset: str, tokenizer):
    """The Qwen2_5OmniThinkerConfig of `preset` with `tokenizer`'s special-token ids."""
    from transformers import Qwen2_5OmniThinkerConfig

    from omnir1.models.tiny import special_token_ids

    size = _choice(THINKERS, preset, "--preset")
    if len(tokenizer) > size.vocab:
        raise ConfigError(None, f"tokenizer of {len(tokenizer)} tokens > vocabulary", "--preset")
    return Qwen2_5OmniThinkerConfig(
        text_config={
            "vocab_size": size.vocab,
            "hidden_size": size.hidden,
            "intermediate_size": size.ffn,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [16, 24, 24],
            },
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": size.tie_embeddings,
        },
        vision_config={**_VISION, "out_hidden_size": size.hidden},
        audio_config={**_AUDIO, "output_dim": size.hidden},
        # the thinker's own flag decides whether lm_head shares the embedding's weights
        tie_word_embeddings=size.tie_embeddings,
        **special_token_ids(tokenizer),
    )


def build_thinker(preset: str, *, device: str = "meta", dtype: str = "bfloat16", seed: int = 0):
    """(model, processor) of `preset` with random weights on `device` ("meta": no memory)."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, set_seed

    from omnir1.models.tiny import TinySizes, build_processor, build_tokenizer, generation_ids

    set_seed(seed)
    tokenizer = build_tokenizer(TinySizes())
    config = thinker_config(preset, tokenizer)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            config, dtype=getattr(torch, dtype)
        )
    generation_ids(model, tokenizer)
    return model.eval(), build_processor(tokenizer)


def build_sam2(preset: str, *, device: str = "cpu"):
    """A SAM2.1 video predictor of `preset` at its own 1024 px, random weights. Not on the meta
    device: Hiera reads a tensor's value while it is built (hiera-l is 0.9 GB in fp32)."""
    from sam2.build_sam import build_sam2_video_predictor

    config, _ = _choice(SAM2, preset, "--sam2")
    return build_sam2_video_predictor(config, ckpt_path=None, device=device)


def parameter_counts(thinker: str, sam2: str) -> dict:
    """Parameters of a preset pair by part: the thinker counted on the meta device, SAM2 (at
    most 224 M parameters) built on the CPU."""
    model, _ = build_thinker(thinker)
    parts = {
        "language_model": model.model.language_model,
        "vision": model.model.visual,
        "audio": model.model.audio_tower,
    }
    counts = {name: _count(part) for name, part in parts.items()}
    counts["lm_head"] = 0 if THINKERS[thinker].tie_embeddings else _count(model.lm_head)
    counts["system1"] = _count(model)
    counts["sam2"] = _count(build_sam2(sam2))
    return counts


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def init_preset(
    out: str | Path,
    thinker: str,
    sam2: str,
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "bfloat16",
) -> dict:
    """A model folder of the preset pair with random weights (`omnir1 models init-tiny`'s layout
    and manifest); returns the manifest."""
    if device == "meta":
        raise ConfigError(
            None, "a model folder needs real weights: not the meta device", "--device"
        )
    model, processor = build_thinker(thinker, device=device, dtype=dtype, seed=seed)
    predictor = build_sam2(sam2, device=device)
    config, _ = SAM2[sam2]
    from omnir1.models.tiny import write_folder

    return write_folder(
        out,
        model,
        processor,
        predictor,
        name=f"omnir1-{thinker}-{sam2}-random-seed{seed}",
        sam2_config=config,
        sam2_overrides=[],
        seed=seed,
        sam2_file=f"sam2.1_{sam2}.pt",
    )
