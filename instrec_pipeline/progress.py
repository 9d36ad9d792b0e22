"""Progress of a long step, for a person watching the run's logs: done/total, rate and ETA.

Dagster-free: a step hands in any ``log`` callable (the run's logger in the assets), and the figures end
up in the materialisation's metadata so the UI can plot them over runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Progress:
    """Logs every ``every`` items or ``interval_s`` seconds, whichever comes first, and at the end."""

    label: str
    total: int
    log: Callable[[str], None] = print
    every: int = 500
    interval_s: float = 30.0
    done: int = 0
    _start: float = field(default_factory=time.monotonic)
    _last_log: float = field(default_factory=time.monotonic)
    _last_done: int = 0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done - self._last_done >= self.every or now - self._last_log >= self.interval_s:
            self._emit(now)

    def finish(self) -> None:
        self._emit(time.monotonic())

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def _emit(self, now: float) -> None:
        self._last_log, self._last_done = now, self.done
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = self.total - self.done
        eta = f", ETA {_duration(left / self.rate)}" if self.rate > 0 and left > 0 else ""
        self.log(f"{self.label}: {self.done}/{self.total} videos{pct}, {self.rate:.2f} videos/s{eta}")

    def metadata(self) -> dict[str, float]:
        """Numeric figures the UI plots across materialisations."""
        return {"videos_per_s": round(self.rate, 3), "elapsed_s": round(self.elapsed_s, 2)}
