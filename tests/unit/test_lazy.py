"""omnir1.lazy: values made on first use and a few kept (what keeps training flat in memory)."""

import pytest

from omnir1.lazy import LRU, LazySequence, Picked


def test_lazy_sequences_make_each_item_once_while_it_is_kept():
    made = []

    def make(i):
        made.append(i)
        return i * i

    squares = LazySequence(5, make, cache=2)
    assert len(squares) == 5 and made == []  # nothing made up front
    assert squares[3] == 9 and squares[3] == 9 and squares[-1] == 16 and made == [3, 4]
    assert squares[0] == 0 and squares[3] == 9 and made == [3, 4, 0, 3]  # 3 left the cache
    assert squares[1:3] == [1, 4] and list(squares) == [0, 1, 4, 9, 16]
    with pytest.raises(IndexError):
        squares[5]
    assert Picked(squares, [4, 0])[0] == 16 and len(Picked(squares, [4, 0])) == 2


def test_lru_keeps_the_most_recently_used():
    calls = []
    cube = LRU(lambda k: calls.append(k) or k**3, size=2)
    assert [cube(1), cube(2), cube(1), cube(3), cube(1), cube(2)] == [1, 8, 1, 27, 1, 8]
    assert calls == [1, 2, 3, 2]  # 2 was the least recently used when 3 came
