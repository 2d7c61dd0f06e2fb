"""Values made when first asked for and kept a while: what keeps memory flat in the size of a
data set (omnir1.rl.inputs for training, the probes' clips)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
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


class LazySequence(Sequence):
    """A sequence whose item i is `make(i)`, made on first use; the last `cache` are kept."""

    def __init__(self, length: int, make: Callable[[int], object], cache: int = 16):
        self._length = length
        self._get = LRU(make, cache)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._get(index % len(self))

    def __len__(self) -> int:
        return self._length
