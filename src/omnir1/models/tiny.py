"""Tiny models of the production architectures, built locally (nothing is downloaded).

`init_tiny(out)` writes a model folder with the same layout and manifest as a production one:

    OUT/models.json            the manifest `omnir1.models.load_models` reads
    OUT/system1/               Qwen2_5OmniThinkerForConditionalGeneration + Qwen2_5OmniProcessor
                               (random weights; byte-level BPE tokenizer trained here)
    OUT/sam2/sam2.1_tiny.pt    SAM2.1 hiera-t video predictor weights ({"model": state_dict})

The System-2 grounder is a frozen copy of the base model (docs/design.md §2), so the manifest
points it at the same folder. Sizes follow the prototype of docs/design.md §7 (1.4 M parameters):
big enough to exercise every code path (video + audio interleaving, mrope, generation), small
enough for a CPU test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omnir1.errors import ConfigError
from omnir1.fsutil import atomic_dir, atomic_path, write_json
from omnir1.systems.prompts import MULTIMODAL_TOKENS, corpus_examples

# Special tokens of the Qwen2.5-Omni vocabulary that the processor and the model refer to
SPECIAL_TOKENS = {
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]

# The Qwen2.5-Omni chat layout, reduced to what our prompts use (text, image, video, audio).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@dataclass(frozen=True)
class TinySizes:
    """Dimensions of the tiny System-1 model (docs/design.md §7)."""

    vocab: int = 2048
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    audio_hidden: int = 64
    audio_layers: int = 2
    sam2_image_size: int = 256  # a multiple of 16: SAM2's feature maps are image_size / 16
    # Rotary codes of the text model. Production: theta 1e6 and the sections (time, height,
    # width) in the proportions 16:24:24. With head dim 32 that leaves neighbouring image tokens
    # 0.03 rad (height) and 2e-4 rad (width) apart: attention can hardly tell where a token is.
    # A small theta (and wider spatial sections) gives spatial positions real rotation.
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int] | None = None  # None: the production proportions
    # one token per digit (as Qwen2's tokenizer): coordinates and times spelled uniformly
    digit_tokens: bool = False


def build_tokenizer(sizes: TinySizes):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS["eos_token"], *CHAT_TOKENS, *MULTIMODAL_TOKENS.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if sizes.digit_tokens:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), tok.pre_tokenizer]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=sizes.vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_examples(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **SPECIAL_TOKENS,
        extra_special_tokens=dict(MULTIMODAL_TOKENS),
        additional_special_tokens=CHAT_TOKENS,
        model_max_length=32768,
    )


def build_processor(tokenizer):
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def special_token_ids(tokenizer) -> dict:
    """The thinker config's multimodal token ids, from `tokenizer`."""
    ids = {name: tokenizer.convert_tokens_to_ids(t) for name, t in MULTIMODAL_TOKENS.items()}
    return {
        "audio_token_index": ids["audio_token"],
        "image_token_index": ids["image_token"],
        "video_token_index": ids["video_token"],
        "audio_start_token_id": ids["audio_bos_token"],
        "audio_end_token_id": ids["audio_eos_token"],
        "vision_start_token_id": ids["vision_bos_token"],
        "vision_end_token_id": ids["vision_eos_token"],
        "user_token_id": tokenizer.convert_tokens_to_ids("<|im_start|>"),
    }


def generation_ids(model, tokenizer) -> None:
    """Generation stops at the end of a chat turn or of the text, and pads with the pad token."""
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.eos_token_id,
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def thinker_config(tokenizer, sizes: TinySizes):
    from transformers import Qwen2_5OmniThinkerConfig

    # mrope splits the rotary half of each head into (time, height, width) sections; keep the
    # production proportions (16, 24, 24 of 64)
    half = sizes.hidden // sizes.heads // 2
    spatial = 3 * half // 8
    mrope = [half - 2 * spatial, spatial, spatial]
    if sizes.mrope_section is not None:
        mrope = list(sizes.mrope_section)
        if sum(mrope) != half or min(mrope) < 0:
            raise ConfigError(
                None,
                f"mrope sections {mrope} must be non-negative and sum to half the head "
                f"dimension ({half})",
                "models.tiny.mrope_section",
            )
    return Qwen2_5OmniThinkerConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": sizes.hidden,
            "intermediate_size": sizes.ffn,
            "num_hidden_layers": sizes.layers,
            "num_attention_heads": sizes.heads,
            "num_key_value_heads": sizes.kv_heads,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": sizes.rope_theta,
                "mrope_section": mrope,
            },
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": sizes.vision_depth,
            "hidden_size": sizes.vision_hidden,
            "intermediate_size": 2 * sizes.vision_hidden,
            "num_heads": 4,
            "out_hidden_size": sizes.hidden,
            "fullatt_block_indexes": [sizes.vision_depth - 1],
        },
        audio_config={
            "d_model": sizes.audio_hidden,
            "encoder_layers": sizes.audio_layers,
            "encoder_attention_heads": 4,
            "encoder_ffn_dim": 2 * sizes.audio_hidden,
            "output_dim": sizes.hidden,
        },
        **special_token_ids(tokenizer),
    )


def build_sam2(image_size: int, device: str = "cpu"):
    """A randomly initialised SAM2.1 hiera-t video predictor at `image_size` pixels."""
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor(
        SAM2_CONFIG, ckpt_path=None, device=device, hydra_overrides_extra=sam2_overrides(image_size)
    )


def sam2_overrides(image_size: int) -> list[str]:
    # The memory attention's RoPE is sized for image_size / 16 feature maps; the config hard-codes
    # 1024 px (64x64), so a smaller image needs both overrides.
    feat = image_size // 16
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]


@dataclass
class TinyModels:
    model: object  # Qwen2_5OmniThinkerForConditionalGeneration
    processor: object  # Qwen2_5OmniProcessor
    sam2: object  # SAM2VideoPredictor
    sizes: TinySizes


def build_tiny(*, seed: int = 0, sizes: TinySizes | None = None) -> TinyModels:
    """The tiny models in memory, deterministic in `seed`."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, set_seed

    sizes = sizes or TinySizes()
    if sizes.sam2_image_size < 64 or sizes.sam2_image_size % 16:
        raise ConfigError(
            None,
            f"SAM2 image size must be a multiple of 16 of at least 64, got {sizes.sam2_image_size}",
            "--sam2-size",
        )
    set_seed(seed)
    tokenizer = build_tokenizer(sizes)
    processor = build_processor(tokenizer)
    model = Qwen2_5OmniThinkerForConditionalGeneration(thinker_config(tokenizer, sizes)).eval()
    generation_ids(model, tokenizer)
    torch.manual_seed(seed)
    return TinyModels(model, processor, build_sam2(sizes.sam2_image_size), sizes)


def init_tiny(out: str | Path, *, seed: int = 0, sizes: TinySizes | None = None) -> dict:
    """Build the tiny models and save them under `out` as a model folder; returns the
    manifest."""
    tiny = build_tiny(seed=seed, sizes=sizes)
    return write_folder(
        out,
        tiny.model,
        tiny.processor,
        tiny.sam2,
        name=f"omnir1-tiny-seed{seed}",
        sam2_config=SAM2_CONFIG,
        sam2_overrides=sam2_overrides(tiny.sizes.sam2_image_size),
        seed=seed,
    )


def write_folder(
    out: str | Path,
    model,
    processor,
    sam2,
    *,
    name: str,
    sam2_config: str,
    sam2_overrides: list[str],
    seed: int,
    sam2_file: str = "sam2.1_tiny.pt",
) -> dict:
    """A model folder of freshly built models: System 1 (also the grounder: a frozen copy of
    the base model) and SAM2 as Meta ships it ({"model": state_dict}); returns the manifest."""
    import torch

    out = Path(out)
    with atomic_dir(out / "system1") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    checkpoint = out / "sam2" / sam2_file
    with atomic_path(checkpoint) as tmp, tmp.open("wb") as fh:
        # through a file object: torch.save names the archive after a path it is given (here
        # a random temporary name), and the same weights must give the same bytes
        torch.save({"model": sam2.state_dict()}, fh)
    manifest = {
        "name": name,
        "system1": "system1",
        "grounder": "system1",
        "sam2": {
            "config": sam2_config,
            "checkpoint": f"sam2/{sam2_file}",
            "overrides": sam2_overrides,
        },
        "parameters": {
            "system1": sum(p.numel() for p in model.parameters()),
            "sam2": sum(p.numel() for p in sam2.parameters()),
        },
        "seed": seed,
    }
    write_json(out / "models.json", manifest)
    return manifest
