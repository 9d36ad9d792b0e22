"""Per-video parallelism through the standard ``concurrent.futures`` interface.

Local threads by default (the heavy lifting happens in ffmpeg subprocesses and sockets, which release the
GIL); the same calls run on a Dask distributed cluster when given its scheduler address, because
``distributed.Client.get_executor()`` implements the same interface. No home-made scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def executor(workers: int = 2, dask_scheduler: str = "") -> Iterator[Executor]:
    """A local thread pool, or a Dask cluster's executor when ``dask_scheduler`` (``tcp://host:port``)."""
    if dask_scheduler:
        from distributed import Client

        with Client(dask_scheduler) as client:
            yield client.get_executor()
    else:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield pool


def map_unordered(
    pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int = 0
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` as they complete, with at most ``window`` in flight (bounds memory)."""
    items = list(items)
    window = window or 2 * max(1, getattr(pool, "_max_workers", 4))
    pending: dict = {}
    it = iter(items)
    for item in it:
        pending[pool.submit(fn, item)] = item
        if len(pending) >= window:
            break
    while pending:
        done = next(as_completed(pending))
        item = pending.pop(done)
        for nxt in it:
            pending[pool.submit(fn, nxt)] = nxt
            break
        yield item, done.result()
