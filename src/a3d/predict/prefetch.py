"""Reading the next scan while the model works on the current one: one background thread, one scan
ahead (memory holds at most the scan being predicted and the next one)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterator, TypeVar

from a3d.errors import A3DError

T = TypeVar("T")
R = TypeVar("R")


class Prefetched(Generic[T, R]):
    """One item and what reading it gave: ``value``, or ``error`` (the A3DError's one line)."""

    def __init__(self, item: T, value: R | None, error: str | None):
        self.item, self.value, self.error = item, value, error

    def take(self) -> R | None:
        """The value, dropped from here so that the caller holds the only reference (memory)."""
        value, self.value = self.value, None
        return value


def _result(item: T, future: Future) -> Prefetched[T, R]:
    try:
        return Prefetched(item, future.result(), None)
    except A3DError as e:  # that scan's failure, reported for it; anything else is a bug and propagates
        return Prefetched(item, None, str(e))


def prefetch(take: Callable[[], T | None], read: Callable[[T], R]) -> Iterator[Prefetched[T, R]]:
    """Items from ``take()`` (None: no more) with ``read(item)`` done ahead: when item k is handed
    out, item k+1 is already taken and being read in the background."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="a3d-read") as pool:
        item = take()
        future = pool.submit(read, item) if item is not None else None
        while item is not None:
            done = _result(item, future)
            item = take()
            future = pool.submit(read, item) if item is not None else None
            yield done
            del done  # the caller's reference is the last one: at most two scans alive
