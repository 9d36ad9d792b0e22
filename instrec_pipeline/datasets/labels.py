"""Label fields: one class per video (the paper's setting) or several, ``;``-separated (the AugLi setting,
e.g. MTG-Jamendo tags: ``guitar;rock;happy``).

Kept in one place so the manifest, the checks, training and the report agree on how a field is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

SEP = ";"


def split_labels(field: str) -> list[str]:
    """The labels of one field, stripped, empty parts dropped, first occurrence kept."""
    return list(dict.fromkeys(p.strip() for p in str(field).split(SEP) if p.strip()))


def is_multilabel(fields: Iterable[str]) -> bool:
    """A manifest is multi-label when any of its label fields names more than one label."""
    return any(SEP in str(f) for f in fields)


def canonical(field: str, classes: Sequence[str]) -> str:
    """One spelling per label set (class order), so equal sets compare and stratify equally."""
    index = {c: i for i, c in enumerate(classes)}
    return SEP.join(sorted(split_labels(field), key=index.__getitem__))


def encode(fields: Sequence[str], classes: Sequence[str], multilabel: bool) -> np.ndarray:
    """Class ids ``(n,)`` int64 for single-label data; a multi-hot ``(n, C)`` float32 matrix otherwise."""
    index = {c: i for i, c in enumerate(classes)}
    if not multilabel:
        return np.array([index[f] for f in fields], dtype=np.int64)
    hot = np.zeros((len(fields), len(classes)), np.float32)
    for row, field in enumerate(fields):
        hot[row, [index[c] for c in split_labels(field)]] = 1.0
    return hot


def class_counts(fields: pd.Series, classes: Sequence[str]) -> pd.Series:
    """Videos per class (a multi-label video counts once for each of its labels), every class listed."""
    exploded = fields.map(split_labels).explode().dropna()
    return exploded.value_counts().reindex(list(classes), fill_value=0)
