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
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class LRU(Generic[T]):
    """`make(key)` remembered for the last `size` keys."""

    def __init__(self, make: Callable[[object], T], size: int):
        self.make, self.size = make, max(1, size)
        self._items: OrderedDict[object, T] = OrderedDict()

    def __call__(self, key) -> T:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self.make(key)
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


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


class LazyContexts(Sequence):
    """The reward context (`omnir1.rl.engine.GroupContext`) of each sample, built on first use
    from its clip (ground truth at System 1's sample times); the last `cache` are kept."""

    def __init__(self, samples: Sequence, cfg, views: SampleViews, cache: int = 16):
        self.samples, self.cfg, self.views = samples, cfg, views
        self._get = LRU(self._build, cache)

    def _build(self, index: int):
        from omnir1.rl.engine import context_from_sample

        clip, frames = self.views(index)
        return context_from_sample(self.samples[index], self.cfg, clip, frames)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._get(index % len(self))

    def __len__(self) -> int:
        return len(self.samples)


class Picked(Sequence):
    """The items of `items` at `indices`, looked up when asked for (a stage's chosen samples)."""

    def __init__(self, items: Sequence, indices: Sequence[int]):
        self.items, self.indices = items, list(indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.items[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


class ClipsOf(Sequence):
    """System 1's clip of each sample, from `views` (SampleViews) when asked for."""

    def __init__(self, views: SampleViews):
        self.views = views

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.views(index)[0]

    def __len__(self) -> int:
        return len(self.views.samples)
