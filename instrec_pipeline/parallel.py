"""Per-video parallelism through the standard ``concurrent.futures`` interface.

Local threads by default (the heavy lifting happens in ffmpeg subprocesses and sockets, which release the
GIL); the same calls run on a Dask distributed cluster when given its scheduler address, because
``distributed.Client.get_executor()`` implements the same interface. No home-made scheduler.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def executor(workers: int = 2, dask_scheduler: str = "") -> Iterator[Executor]:
    """A local thread pool, or a Dask cluster's executor when ``dask_scheduler`` (``tcp://host:port``)."""
    if dask_scheduler:
        try:
            from distributed import Client
        except ImportError as e:  # an optional extra: most deployments never need it
            raise RuntimeError("compute.dask_scheduler needs distributed: pip install -e '.[dask]'") from e

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


def usable_cores() -> int:
    """Cores this process may run on (its affinity, e.g. a container's or ``taskset``'s), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DemuxPlan:
    """How to spread demux over ``cores``: ``workers`` videos at once, ffmpeg ``threads`` each."""

    workers: int
    threads: int


def demux_plan(cores: int | None = None, workers: int | None = None) -> DemuxPlan:
    """One single-threaded ffmpeg per core, or ``cores // workers`` threads each when ``workers`` is given.

    Why: ffmpeg's threads (frame-threaded decoding, filter slices) cost synchronisation and idle waits at
    every frame, separate processes share nothing, and a partition holds many videos. ``make bench``
    (section f) measures processes × threads on 1 and 2 cores and projects 16.
    """
    cores = max(1, cores or usable_cores())
    workers = max(1, workers or cores)
    return DemuxPlan(workers, max(1, cores // workers))


def frame_readers(device_type: str, cores: int | None = None) -> int:
    """Threads reading and decoding stored frames ahead of the Inception forward.

    On the CPU one: the network's own streams use every core, and a second reader would only take cores
    from them. On a GPU one per spare core, up to 4: a thread decodes ~4,000–5,000 JPEG frames/s
    (libjpeg-turbo releases the GIL), one alone would cap a data-centre GPU's Inception rate, and each
    reads ahead one batch (bounded memory).
    """
    return 1 if device_type == "cpu" else max(1, _spare_cores(cores))


def loader_workers(device_type: str, cores: int | None = None) -> int:
    """DataLoader processes reading training blocks ahead of the model (when a split exceeds its budget).

    On the CPU none: measured on 2 cores (``make bench``, g), reading and cropping stored log-mels is 1–2 %
    of Choi's fit in-process, while workers cost ~5 s to spawn and took ~8 % of the cores from every later
    epoch; for the small video model reading is ~40 % of the fit, yet two workers were slower still (each
    16-MB block crosses a process boundary). On a GPU the model runs far faster than one process reads: one
    worker per spare core, up to 4.
    """
    return 0 if device_type == "cpu" else _spare_cores(cores)


def _spare_cores(cores: int | None, most: int = 4) -> int:
    """Cores beside the one driving a GPU, at most ``most``: for threads or processes that feed it."""
    return max(0, min(most, (cores or usable_cores()) - 1))
