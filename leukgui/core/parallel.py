"""Decode and detect several files at once, handing the results on in input order.

Why: finding the white cells of a smear field (OpenCV, which releases the GIL) takes a few
milliseconds per field on one core, and with a GPU (or OpenVINO) classifying the cells the
decoder thread, not the network, sets the pace. `ordered_map` runs the work on a few
threads and still yields in input order, so results, batches and the report keep the
order of the files. It reads at most `ahead` items beyond the one being handed on: memory
stays bounded however long the folder, and a stopped run leaves few files half done.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

__all__ = ["DEFAULT_THREADS", "MAX_THREADS", "Mapped", "default_threads", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")

MAX_THREADS = 4  # beyond this the disk, not the CPU, is the limit for image folders


def default_threads() -> int:
    """Threads for decoding: one per core, at most `MAX_THREADS`.

    When the network runs on the same CPU the decoders mostly wait (the batch queue is
    full), so they take little from it; with a GPU they keep it fed.
    """
    return max(1, min(MAX_THREADS, os.cpu_count() or 1))


DEFAULT_THREADS = default_threads()


class Mapped(NamedTuple):
    """One item's turn: its result, or the exception `fn` raised on it (result None)."""

    item: Any
    result: Any
    error: BaseException | None


def _call(fn: Callable[[T], R], item: T) -> tuple[R | None, BaseException | None]:
    try:
        return fn(item), None
    except Exception as exc:  # handed to the caller, in order, like a result
        return None, exc


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    threads: int = DEFAULT_THREADS,
    *,
    ahead: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Mapped]:
    """(item, fn(item), None) or (item, None, exception) for each item, in input order.

    `threads` <= 1 runs everything in the calling thread (no pool). `ahead` (default twice
    the threads) bounds the items started but not yet handed on. When `stop` is set, or
    the caller closes the generator, items not started are dropped and the pool is shut
    down without waiting for the rest.
    """
    if threads <= 1:
        for item in items:
            if stop is not None and stop.is_set():
                return
            yield Mapped(item, *_call(fn, item))
        return
    limit = max(1, ahead if ahead is not None else 2 * threads)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="leukgui-decode")
    pending: deque[tuple[T, Future]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append((item, pool.submit(_call, fn, item)))
            if len(pending) < limit:
                continue
            item0, future = pending.popleft()
            if stop is not None and stop.is_set():
                return
            yield Mapped(item0, *future.result())
        while pending:
            item0, future = pending.popleft()
            if stop is not None and stop.is_set():
                return
            yield Mapped(item0, *future.result())
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
