"""Model inputs built when a step asks for them, not all at start-up.

A training set holds thousands of expressions (10k+ for ReVOS / MeViS). Built up front, their
processor outputs (at the release budget ~29 MB of pixels and audio features each) would need
hundreds of GB and half an hour before the first step. Here each sample's clip, prompt and
reward context is made on first use and kept in a small least-recently-used cache: memory and
start-up stay flat in the number of samples (bench/startup.py measures it). The values are the
same as building them all at once (tests/integration/test_grpo.py compares them).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from omnir1.lazy import LRU, LazySequence


class SampleViews:
    """(System 1's VideoClip, System 2's full frames or None) of a sample's video, loaded on
    first use: from its shard when `shards` is given (the frames a memory map), else decoded.
    The last `videos` videos are kept: a video's expressions usually come together."""

    def __init__(self, samples: Sequence, cfg, shards: str | Path | None = None, videos: int = 4):
        from omnir1.data.shards import check_index

        self.samples, self.cfg, self.shards = samples, cfg, shards
        if shards is not None:  # every video has a shard of these settings, checked at once
            check_index(shards, cfg, {s.video_id for s in samples})
        self._load = LRU(self._video, videos)
        self._first_of: dict[str, int] = {}  # a video's loads are keyed by its first sample
        for i, s in enumerate(samples):
            self._first_of.setdefault(s.video_id, i)

    def _video(self, index: int):
        from omnir1.data.shards import load_shard
        from omnir1.systems.reasoning import load_clip

        sample = self.samples[index]
        if self.shards is not None:
            return load_shard(self.shards, sample.video_id, cfg=self.cfg)
        folder = sample.frame_paths[0].parent
        clip = load_clip(folder, audio=sample.audio_path, cfg=self.cfg, folder_fps=sample.fps)
        return clip, None

    def __call__(self, index: int):
        return self._load(self._first_of[self.samples[index].video_id])


class LazyPrompts(Mapping[int, dict]):
    """Sample index -> processor outputs of its prompt (`GlobalReasoner.inputs`), each with its
    own seeded example times (seed * 1_000_003 + index: the same prompt on every epoch and
    resume), built on first use; the last `cache` are kept."""

    def __init__(
        self,
        reasoner,
        views: SampleViews,
        expressions: Sequence[str],
        seed: int = 0,
        cache: int = 8,
    ):
        self.reasoner, self.views, self.expressions, self.seed = reasoner, views, expressions, seed
        self._get = LRU(self._build, cache)

    def _build(self, index: int) -> dict:
        clip, _ = self.views(index)
        rng = random.Random(self.seed * 1_000_003 + index)
        return dict(self.reasoner.inputs(clip, self.expressions[index], rng))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.expressions):
            raise KeyError(index)
        return self._get(index)

    def __len__(self) -> int:
        return len(self.expressions)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.expressions)))


class LazyContexts(LazySequence):
    """The reward context (`omnir1.rl.engine.GroupContext`) of each sample, built on first use
    from its clip (ground truth at System 1's sample times); the last `cache` are kept."""

    def __init__(self, samples: Sequence, cfg, views: SampleViews, cache: int = 16):
        self.samples, self.cfg, self.views = samples, cfg, views
        super().__init__(len(samples), self._build, cache)

    def _build(self, index: int):
        from omnir1.rl.engine import context_from_sample

        clip, frames = self.views(index)
        return context_from_sample(self.samples[index], self.cfg, clip, frames)


class ClipsOf(LazySequence):
    """System 1's clip of each sample, from `views` (SampleViews, which keeps a few videos)."""

    def __init__(self, views: SampleViews):
        super().__init__(len(views.samples), lambda i: views(i)[0], cache=1)
