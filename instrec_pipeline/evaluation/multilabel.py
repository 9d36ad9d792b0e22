"""Multi-label metrics (the AugLi setting): ROC-AUC and PR-AUC per class, F1 at per-class thresholds.

Thresholds are tuned on the val split (:func:`tune_thresholds`) and only applied to test: tuning them on
the split that is scored would inflate F1. AUCs need no threshold. A class with no positive (or no
negative) in the scored split has no defined AUC; it is left out of the macro mean rather than counted as
0 or 1, and the per-class table shows it as NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MultiLabelScores:
    """Headline numbers of one model on one split; fractions in [0, 1]."""

    roc_auc_macro: float
    pr_auc_macro: float
    f1_micro: float
    f1_macro: float
    n: int

    def headline(self) -> tuple[str, float]:
        return "pr_auc", self.pr_auc_macro


def _check(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"multi-hot y_true {y.shape} and probs {p.shape} must be the same (n, C)")
    if not len(p):
        raise ValueError("cannot score an empty set")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be multi-hot (0/1)")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or inf")
    return y.astype(np.int64), p


def per_class_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision (PR-AUC) per class; NaN where the class is constant in y_true."""
    y, p = _check(y_true, probs)
    roc = np.full(y.shape[1], np.nan)
    ap = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        positives = y[:, c].sum()
        if 0 < positives < len(y):
            roc[c] = roc_auc_score(y[:, c], p[:, c])
        if positives:
            ap[c] = average_precision_score(y[:, c], p[:, c])
    return roc, ap


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")


def pr_auc_macro(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean average precision over the classes with a positive (NaN when none has one)."""
    return _nanmean(per_class_auc(y_true, probs)[1])


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per class, the score threshold that maximises that class's F1 on this (val) split.

    A class without both positives and negatives here keeps :data:`DEFAULT_THRESHOLD`.
    """
    y, p = _check(y_true, probs)
    out = np.full(y.shape[1], DEFAULT_THRESHOLD)
    for c in range(y.shape[1]):
        if not 0 < y[:, c].sum() < len(y):
            continue
        precision, recall, thresholds = precision_recall_curve(y[:, c], p[:, c])
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                       where=(precision + recall) > 0)[:-1]  # fmt: skip
        out[c] = thresholds[int(np.argmax(f1))]
    return out


def decide(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Multi-hot decisions: a label is on where its score reaches its class's threshold."""
    return (np.asarray(probs) >= np.asarray(thresholds)[None, :]).astype(np.int64)


def multilabel_score(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> MultiLabelScores:
    y, p = _check(y_true, probs)
    roc, _ = per_class_auc(y, p)
    pred = decide(p, thresholds)
    return MultiLabelScores(
        roc_auc_macro=_nanmean(roc),
        pr_auc_macro=pr_auc_macro(y, p),
        f1_micro=float(f1_score(y, pred, average="micro", zero_division=0)),
        f1_macro=float(f1_score(y, pred, average="macro", zero_division=0)),
        n=len(y),
    )


def multilabel_per_class(
    y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, class_names: Sequence[str]
) -> pd.DataFrame:
    """Threshold, precision, recall, F1, ROC-AUC, PR-AUC and support for every class."""
    y, p = _check(y_true, probs)
    prec, rec, f1, support = precision_recall_fscore_support(
        y, decide(p, thresholds), average=None, zero_division=0
    )
    roc, ap = per_class_auc(y, p)
    return pd.DataFrame(
        {
            "class": list(class_names),
            "threshold": np.asarray(thresholds, float),
            "precision": prec.astype(float),
            "recall": rec.astype(float),
            "f1": f1.astype(float),
            "roc_auc": roc,
            "pr_auc": ap,
            "support": support.astype(int),
        },
        index=pd.Index(np.arange(len(class_names)), name="class_id"),
    )


def label_confusion(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(C, C)`` counts of (true label i, predicted label j) pairs over all videos: the multi-label
    counterpart of a confusion matrix (the diagonal is the hits, row i off-diagonal what i is mixed with)."""
    y, p = _check(y_true, probs)
    return y.T @ decide(p, thresholds)
