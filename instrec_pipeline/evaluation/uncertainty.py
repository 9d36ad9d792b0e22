"""How sure a score is: bootstrap confidence intervals, and paired bootstraps between two models.

On FCVID's ~770 test clips a difference of 2–3 points is within noise; the report says so instead of
letting two point estimates look different. Resampling is over test clips (with replacement), seeded, and
paired comparisons resample the same clips for both models, so what varies is only the clip sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score

N_BOOT = 1000
LEVEL = 0.95


def _hits(y: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Per clip: is the true class among the top k (ties to the lower index, as :mod:`metrics`)?"""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (order == y[:, None]).any(axis=1).astype(float)


def _f1_macro(y: np.ndarray, pred: np.ndarray) -> float:
    present = np.union1d(y, pred)
    return float(f1_score(y, pred, labels=present, average="macro", zero_division=0))


#: Metric name → per-resample function of (clip indices, y, probs).
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "hit1": lambda i, y, p: float(_hits(y[i], p[i], 1).mean()),
    "hit3": lambda i, y, p: float(_hits(y[i], p[i], 3).mean()),
    "f1_macro": lambda i, y, p: _f1_macro(y[i], p[i].argmax(1)),
}


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low - 1e-12 <= x <= self.high + 1e-12


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_intervals(
    y: np.ndarray, probs: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of Hit@1, Hit@3 and macro F1 over the clips."""
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    idx = _resamples(len(y), n_boot, seed)
    tail = (1 - level) / 2
    out = {}
    for name, fn in METRICS.items():
        values = np.array([fn(i, y, probs) for i in idx])
        out[name] = Interval(float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
    return out


@dataclass(frozen=True)
class Comparison:
    """``a − b`` on one metric: the observed difference, its interval and a one-sided p (share ≤ 0)."""

    metric: str
    diff: float
    interval: Interval
    p_not_better: float


def paired_bootstrap(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    metric: str = "hit1",
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Comparison:
    """Is model a better than model b on these clips? Both are scored on the same resampled clips."""
    y = np.asarray(y)
    a, b = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    fn = METRICS[metric]
    every = np.arange(len(y))
    diffs = np.array([fn(i, y, a) - fn(i, y, b) for i in _resamples(len(y), n_boot, seed)])
    tail = (1 - level) / 2
    return Comparison(
        metric,
        fn(every, y, a) - fn(every, y, b),
        Interval(float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))),
        float(np.mean(diffs <= 0)),
    )
