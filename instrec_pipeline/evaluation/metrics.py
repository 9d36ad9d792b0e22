"""Clip-level metrics of the paper: Hit@1, Hit@3, F1 (macro and weighted), per-class table, confusion.

Every function takes the model's class scores (``probs``, shape ``(n, C)``) rather than hard predictions,
so that Hit@k and the argmax-based metrics are always computed from the same array.

Ties: the top-1 prediction is ``np.argmax`` (lowest class index wins a tie) everywhere, including Hit@k,
so Hit@1 always equals the accuracy implied by the confusion matrix. A row with *all* scores equal (the
uniform prior a model gives a clip whose modality is missing) is no prediction at all: it counts as a miss
in Hit@k and F1 and as no column of the confusion matrix, never as a vote for class 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, top_k_accuracy_score


@dataclass(frozen=True)
class Scores:
    """Headline numbers of one model on one split; fractions in [0, 1] (the report shows them in %)."""

    hit1: float
    hit3: float
    f1_macro: float
    f1_weighted: float
    n: int

    def headline(self) -> tuple[str, float]:
        return "hit1", self.hit1


def _check(
    y_true: np.ndarray, probs: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and label range up front: sklearn's own errors on these are cryptic or silent."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (n, C), got shape {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true must be 1-D with {p.shape[0]} entries, got shape {y.shape}")
    if p.shape[0] == 0:
        raise ValueError("cannot score an empty set")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"probs has {p.shape[1]} columns, expected {n_classes} classes")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must hold integer class ids")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true holds ids outside [0, {p.shape[1]})")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or inf")
    return y.astype(np.int64), p


#: Top-1 "class" of a row that says nothing (all scores equal).
ABSTAIN = -1


def abstains(probs: np.ndarray) -> np.ndarray:
    """Rows whose scores are all equal: the model had no input for that clip."""
    p = np.asarray(probs)
    return np.ptp(p, axis=1) == 0 if p.shape[1] > 1 else np.zeros(len(p), bool)


def predict(probs: np.ndarray) -> np.ndarray:
    """Top-1 class per row; a tie goes to the lowest class index (``np.argmax``); :data:`ABSTAIN` for a
    row without information."""
    return np.where(abstains(probs), ABSTAIN, np.asarray(probs).argmax(axis=1))


def hit_at_k(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k highest scores (the paper's Hit@k).

    k is capped at C, so Hit@3 of a 2-class problem is 1.0 instead of an error. sklearn breaks ties in
    favour of the *highest* class index; the columns are mirrored before calling it so that ties go to the
    lowest index, consistent with :func:`predict` (and hence F1 and the confusion matrix).
    """
    y, p = _check(y_true, probs)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_classes = p.shape[1]
    k = min(k, n_classes)
    if k >= n_classes:
        return 1.0
    if n_classes == 2:  # sklearn treats 2 labels as the binary case and wants 1-D scores; k is 1 here
        return float(np.mean(predict(p) == y))
    said = ~abstains(p)  # a row without information is a miss, whatever the tie rule would pick
    if not said.any():
        return 0.0
    y, p = n_classes - 1 - y[said], p[said, ::-1]
    hits = top_k_accuracy_score(y, p, k=k, labels=np.arange(n_classes), normalize=False)
    return float(hits / len(said))


def score(y_true: np.ndarray, probs: np.ndarray) -> Scores:
    """Hit@1, Hit@3 and both F1 averages (the paper does not say which F1 it reports).

    Macro F1 averages over the classes that occur in y_true or in the predictions (sklearn's default),
    so a class absent from a small test set and never predicted does not drag the mean to 0.
    """
    y, p = _check(y_true, probs)
    pred = predict(p)
    present = np.setdiff1d(np.union1d(y, pred), [ABSTAIN])
    return Scores(
        hit1=hit_at_k(y, p, 1),
        hit3=hit_at_k(y, p, 3),
        f1_macro=float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        f1_weighted=float(f1_score(y, pred, labels=present, average="weighted", zero_division=0)),
        n=int(y.shape[0]),
    )


def per_class_table(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support for every class (absent classes get zeros), indexed by class id.

    Reported per class because YT-8M is heavily imbalanced: the averages hide what happens to Banjo.
    """
    y, p = _check(y_true, probs, len(class_names))
    labels = np.arange(len(class_names))
    prec, rec, f1, support = precision_recall_fscore_support(
        y, predict(p), labels=labels, average=None, zero_division=0
    )
    return pd.DataFrame(
        {
            "class": list(class_names),
            "precision": prec.astype(float),
            "recall": rec.astype(float),
            "f1": f1.astype(float),
            "support": support.astype(int),
        },
        index=pd.Index(labels, name="class_id"),
    )


def confusion(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class; always (C, C) even if classes are absent."""
    y, p = _check(y_true, probs, n_classes)
    return confusion_matrix(y, predict(p), labels=np.arange(n_classes))
