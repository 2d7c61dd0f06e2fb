"""System 1, the Global Reasoning System: a Qwen2.5-Omni thinker that watches the video (2 fps,
at most `system1.max_frames` frames spread over a longer clip, low resolution), hears its audio,
and answers keyframes with single-frame descriptions.

`load_clip` decodes what System 1 sees; `GlobalReasoner` builds the prompt (docs/design.md §2),
generates, and parses each completion with the total parser of `omnir1.systems.parsing`.
The same prompt builder serves training (the GRPO trainer's prompts) and inference.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnir1.config import System1Params
from omnir1.systems.parsing import FrameTimes
from omnir1.systems.prompts import SYSTEM1_SYSTEM, format_time, marker_token_ids, system1_task

QWEN_PATCH = 28


def frames_mode(cfg) -> str:
    """How the prompt shows the frames: "video" (Qwen2.5-Omni's own way, the audio interleaved,
    time-aligned rotary codes a pretrained model reads), or "images" (each frame an image after
    its time in text: a research option, `system1.frames` of omnir1.experimental.params, for a
    tiny model that cannot read times from rotary codes; docs/design.md §7). The product's
    System1Params has no such key: always "video"."""
    return getattr(cfg, "frames", "video")


def audio_first(cfg) -> bool:
    """With frames as images, the audio before them (research's `system1.audio_first`)."""
    return getattr(cfg, "audio_first", False)


@dataclass
class VideoClip:
    """What System 1 sees of a video."""

    frames: np.ndarray  # (T, H, W, 3) uint8, H and W multiples of 28
    times: np.ndarray  # (T,) seconds of each sampled frame: evenly spaced, 2 fps or fewer
    source_indices: np.ndarray  # (T,) index of each sampled frame in the full video
    native_size: tuple[int, int]  # (height, width) of the video
    audio: np.ndarray | None  # 16 kHz mono float32; None when the video has no audio track
    duration_s: float

    def __post_init__(self) -> None:
        # a zero-length track (an empty WAV, an audio stream without samples) is silence: the
        # audio tower cannot take zero frames, so the clip is treated as having no audio
        if self.audio is not None and self.audio.size == 0:
            from omnir1.media.audio import NoAudioWarning

            warnings.warn("empty audio track: System 1 gets no audio", NoAudioWarning, stacklevel=2)
            self.audio = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_times(self) -> FrameTimes:
        """The frames' times and the clip's duration: what the processor's temporal positions,
        the prompt, the parser and the keyframe times all use."""
        return FrameTimes(tuple(self.times.tolist()), self.duration_s)


def load_clip(
    video: str | Path,
    *,
    audio: str | Path | None = None,
    cfg: System1Params | None = None,
    folder_fps: float = 1.0,
) -> VideoClip:
    """Sample frames at `cfg.fps` under the pixel budget and decode the audio (from `audio`, else
    from the video itself; a silent video gives None, not an error)."""
    from omnir1.media import inspect, load_audio, sample_frames
    from omnir1.media.audio import NoAudioWarning

    cfg = cfg or System1Params()
    info = inspect(video, folder_fps=folder_fps)
    sampled = sample_frames(
        video,
        fps=cfg.fps,
        max_frames=cfg.max_frames,
        max_pixels=cfg.max_pixels,
        folder_fps=folder_fps,
    )
    track = None
    source = audio if audio is not None else (video if info.has_audio else None)
    if source is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoAudioWarning)
            track = load_audio(source)
    duration = info.duration_s or info.num_frames / (info.fps or folder_fps)
    return VideoClip(
        frames=sampled.frames,
        times=sampled.times_s,
        source_indices=sampled.source_indices,
        native_size=sampled.source_size,
        audio=track,
        duration_s=float(duration),
    )


class GlobalReasoner:
    """Prompting, generation and parsing of System 1 around a loaded model and processor."""

    def __init__(self, model, processor, cfg: System1Params | None = None, *, greedy=False):
        """`cfg`: params.yaml `system1`; `greedy`: deterministic answers (evaluation, probes)
        instead of sampling at `cfg.temperature` / `cfg.top_p` (training)."""
        self.model = model
        self.processor = processor
        self.cfg = cfg or System1Params()
        self.sample = not greedy
        self.suppress_tokens = marker_token_ids(processor.tokenizer)

    def messages(self, clip: VideoClip, expression: str, rng: random.Random) -> list[dict]:
        task = system1_task(
            expression, clip.duration_s, rng, self.cfg.moments, compact=self.cfg.prompt == "compact"
        )
        if frames_mode(self.cfg) == "images":
            media: list[dict] = []
            for t in clip.times:
                media += [{"type": "text", "text": format_time(float(t))}, {"type": "image"}]
            if self.hears(clip) and audio_first(self.cfg):
                media.insert(0, {"type": "audio"})
            elif self.hears(clip):
                media.append({"type": "audio"})
        else:
            media = [{"type": "video"}]
        return [
            {"role": "system", "content": SYSTEM1_SYSTEM},
            {"role": "user", "content": [*media, {"type": "text", "text": task}]},
        ]

    def hears(self, clip: VideoClip) -> bool:
        """Whether the prompt carries the clip's audio (it has a track, and `cfg.audio`)."""
        return clip.audio is not None and self.cfg.audio

    def audio_in_video(self, clip: VideoClip) -> bool:
        """Whether the audio is interleaved with the video (the model's `use_audio_in_video`)."""
        return self.hears(clip) and frames_mode(self.cfg) == "video"

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def expression_prompts(
        self, clip: VideoClip, expressions: Sequence[str], seed: int = 0
    ) -> list[str]:
        """The prompt of each expression on `clip`, each with the same seeded example."""
        return [self.chat_prompt(self.messages(clip, e, random.Random(seed))) for e in expressions]

    def inputs(self, clip: VideoClip, expression: str, rng: random.Random):
        """Processor outputs (input ids with the video and audio interleaved, pixel values,
        audio features) for one clip and expression."""
        prompt = self.chat_prompt(self.messages(clip, expression, rng))
        return self.batch_inputs(clip, [prompt])

    def batch_inputs(self, clip: VideoClip, prompts: Sequence[str]):
        """Processor outputs for several chat-templated prompts on one clip, left-padded for
        generation: the clip's video and audio repeated per row."""
        n = len(prompts)
        kwargs: dict = {}
        if self.hears(clip):
            kwargs["audio"] = [clip.audio] * n
        if self.audio_in_video(clip):
            # the audio track is interleaved with the video in 2-second chunks
            kwargs |= {"audio_from_video_indices": list(range(n)), "load_audio_from_video": True}
        if frames_mode(self.cfg) == "images":
            # frames are already at System 1's size (multiples of 28): no resizing
            kwargs |= {"images": list(clip.frames) * n, "images_kwargs": {"do_resize": False}}
        else:
            # the frames' real rate, so that temporal positions (and the audio chunks interleaved
            # with them) say true seconds: below system1.fps when frames are spread over a long clip
            rate = clip.frame_times.rate
            video_kwargs = {"do_resize": False, "do_sample_frames": False, "fps": rate}
            kwargs |= {"videos": [clip.frames] * n, "videos_kwargs": video_kwargs}
        return self.processor(
            text=list(prompts), return_tensors="pt", padding=True, padding_side="left", **kwargs
        )

    def generate_greedy(
        self,
        clip: VideoClip,
        prompts: Sequence[str],
        *,
        batch_size: int = 8,
        max_new_tokens: int = 0,
    ) -> list[str]:
        """Greedy completions of chat-templated prompts on one clip, `batch_size` per generate
        call: the same answers as one call per prompt (tested), several times faster, as the
        clip's frames and audio are encoded in one pass and decoding steps are shared."""
        answers: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            answers += self._generate_batch(clip, chunk, max_new_tokens=max_new_tokens)
        return answers

    def sample_batch(
        self, clip: VideoClip, prompts: Sequence[str], *, num_return_sequences: int, seed: int
    ) -> list[list[str]]:
        """`num_return_sequences` sampled completions of each chat-templated prompt on one clip,
        all in one generate call (seeded once): on a CPU a tiny model's decoding step costs
        little more for 16 rows than for 2, so a clip's expressions are best sampled together.
        Each row is sampled as it would be alone (left padding; tested on greedy answers)."""
        import torch

        torch.manual_seed(seed)
        flat = self._generate_batch(
            clip, prompts, sample=True, num_return_sequences=num_return_sequences
        )
        n = num_return_sequences
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _generate_batch(
        self,
        clip: VideoClip,
        prompts: Sequence[str],
        *,
        sample: bool = False,
        num_return_sequences: int = 1,
        max_new_tokens: int = 0,
    ) -> list[str]:
        import torch

        inputs = self.batch_inputs(clip, prompts).to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                use_audio_in_video=self.audio_in_video(clip),
                max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                do_sample=sample,
                temperature=self.cfg.temperature if sample else None,
                top_p=self.cfg.top_p if sample else None,
                num_return_sequences=num_return_sequences,
                suppress_tokens=self.suppress_tokens,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new, skip_special_tokens=True)

    def answer_greedy(
        self, clip: VideoClip, expressions: Sequence[str], *, seed: int = 0, batch_size: int = 8
    ) -> list[str]:
        """Greedy System-1 answers for every expression on one clip (`generate_greedy`)."""
        if self.sample:
            raise ValueError("batched answers are for greedy decoding (greedy=True)")
        prompts = self.expression_prompts(clip, expressions, seed)
        return self.generate_greedy(clip, prompts, batch_size=batch_size)

    def generate(
        self,
        clip: VideoClip,
        expression: str,
        *,
        num_return_sequences: int = 1,
        seed: int = 0,
    ) -> list[str]:
        """Completions (the text after the prompt) for one clip and expression."""
        import torch

        prompt = self.chat_prompt(self.messages(clip, expression, random.Random(seed)))
        torch.manual_seed(seed)
        return self._generate_batch(
            clip,
            [prompt],
            sample=self.sample,
            num_return_sequences=num_return_sequences,
        )
