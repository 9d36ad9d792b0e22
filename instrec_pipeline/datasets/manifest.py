"""Manifests: one row per video (``video_id, source, label, split``), validated row by row.

``label`` holds one class, or several separated by ``;`` in a multi-label dataset.

A bad row (missing field, unknown label, duplicate id, an id that could escape a folder) is rejected with
its row number and reason while every good row goes on: one typo must not cost a partition of thousands.
Splits missing from a manifest are assigned stratified and seeded (70/15/15), as the paper's were not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from instrec_pipeline.datasets.labels import canonical, split_labels

COLUMNS = ("video_id", "source", "label", "split")
SPLITS = ("train", "val", "test")
_BAD_ID = re.compile(r"[/\\]|\.\.|^\s|\s$|[\x00-\x1f]")


class ManifestError(ValueError):
    """The manifest as a whole is unusable (unreadable file, missing columns)."""


@dataclass(frozen=True)
class Rejected:
    """A manifest row that was left out, and why; ``row`` is 1-based in the file, header excluded."""

    row: int
    video_id: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} ({self.video_id or '<no id>'}): {self.reason}"


def read_table(path: Path) -> pd.DataFrame:
    """CSV or Parquet by extension, every column read as text (ids like ``007`` must stay strings)."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path).astype("string")
        return pd.read_csv(path, dtype="string", keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc


def validate(
    table: pd.DataFrame, classes: list[str], *, require_split: bool = False, multilabel: bool = False
) -> tuple[pd.DataFrame, list[Rejected]]:
    """Keep the valid rows of ``table``; the rest come back as :class:`Rejected` with a reason.

    ``split`` may be absent or empty (then :func:`assign_splits` fills it) unless ``require_split``.
    Multi-label fields come back in one canonical spelling (class order).
    """
    missing = [c for c in ("video_id", "source", "label") if c not in table.columns]
    if missing or (require_split and "split" not in table.columns):
        need = missing or ["split"]
        raise ManifestError(f"manifest lacks column(s) {', '.join(need)}; expected {', '.join(COLUMNS)}")
    table = table.copy()
    if "split" not in table.columns:
        table["split"] = ""
    table = table[list(COLUMNS)].fillna("").astype(str).apply(lambda c: c.str.strip())
    known = set(classes)
    seen: set[str] = set()
    keep: list[int] = []
    rejected: list[Rejected] = []
    for pos, row in enumerate(table.itertuples(index=False)):
        reason = _row_problem(row, known, seen, require_split, multilabel)
        if reason:
            rejected.append(Rejected(pos + 1, row.video_id, reason))
        else:
            seen.add(row.video_id)
            keep.append(pos)
    table = table.iloc[keep].reset_index(drop=True)
    if multilabel:
        table["label"] = table["label"].map(lambda f: canonical(f, classes))
    return table, rejected


def _row_problem(
    row: tuple, known: set[str], seen: set[str], require_split: bool, multilabel: bool
) -> str | None:
    if not row.video_id:
        return "empty video_id"
    if _BAD_ID.search(row.video_id):
        return "video_id must not contain '/', '\\', '..', control characters or surrounding spaces"
    if row.video_id in seen:
        return "duplicate video_id (first occurrence kept)"
    if not row.source:
        return "empty source"
    labels = split_labels(row.label) if multilabel else [row.label]
    if not any(labels):
        return "empty label"
    unknown = [x for x in labels if x not in known]
    if unknown:
        return f"unknown label{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
    if row.split and row.split not in SPLITS:
        return f"unknown split {row.split!r} (expected one of {', '.join(SPLITS)})"
    if require_split and not row.split:
        return "empty split"
    return None


def assign_splits(
    table: pd.DataFrame, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> pd.DataFrame:
    """Fill empty ``split`` cells stratified by label and seeded; rows that have a split keep it.

    Classes too small to stratify (fewer than 3 videos) fall back to a seeded unstratified split.
    """
    table = table.copy()
    todo = table["split"] == ""
    if not todo.any():
        return table
    idx = table.index[todo]
    labels = table.loc[idx, "label"]
    counts = labels.value_counts()
    stratify = labels if counts.min() >= 3 and len(idx) >= 3 * len(counts) else None
    train_f, val_f, test_f = fractions
    train, rest = train_test_split(idx, train_size=train_f, random_state=seed, stratify=stratify)
    rest_stratify = table.loc[rest, "label"] if stratify is not None else None
    if rest_stratify is not None and rest_stratify.value_counts().min() < 2:
        rest_stratify = None
    val, test = train_test_split(
        rest, train_size=val_f / (val_f + test_f), random_state=seed, stratify=rest_stratify
    )
    table.loc[train, "split"] = "train"
    table.loc[val, "split"] = "val"
    table.loc[test, "split"] = "test"
    return table
