"""Background servers for tests (`dagster dev`, redis-server, a Celery worker): each in its own process
group, so that stopping it also stops every child it started, whatever the shell did with SIGINT."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path = REPO) -> subprocess.Popen:
    """``cmd`` in a new session (its pid is its process group), stdout and stderr into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever of it is left after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a slow leader, or children that outlived it
    proc.wait()


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    """Poll ``ready`` until true; fail with the log's tail if ``proc`` exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"{what} not ready within {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")
