"""One writer per partition: an exclusive ``flock`` on a lock file beside the partition's Zarr group.

Zarr has no locks, and two runs of one partition at once lost and duplicated videos while both reported
success. Every writing step holds this lock for its whole run (read what is done, write the rest); a second
run waits up to ``wait_s`` and then fails with a message naming the holder. The kernel drops the lock when
its process dies (even on SIGKILL), so a crashed run never leaves the partition locked. ``flock`` works on
local filesystems and on NFSv4; a shared store on anything else needs one writer per partition by design
(Dagster's backfills launch one run per partition).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PartitionBusy(RuntimeError):
    """Another process writes this partition."""


@contextmanager
def exclusive(path: Path, holder: str, wait_s: float = 0.0, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the lock at ``path`` (created if needed) during the ``with`` block; ``holder`` says who."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    other = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                    raise PartitionBusy(
                        f"{path.parent.name}/{path.stem} is being written by {other}; "
                        f"waited {wait_s:.0f} s. Let that run finish (or cancel it), then re-run."
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()} on {socket.gethostname()})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
