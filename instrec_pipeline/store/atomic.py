"""Whole-file writes that a crash can never leave half done: tables, checkpoints, reports.

Written to a unique temporary name in the target's folder (two writers never share one), flushed to disk
with ``fsync``, then renamed over the target, which is atomic on POSIX filesystems; the folder is synced
so the rename itself survives a power cut. A reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], mode: int = 0o644) -> Path:
    """``write(file)`` into a temporary sibling of ``path``, then replace ``path`` with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp's 0600 would hide outputs from the other users of a shared store
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened for fsync
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path
