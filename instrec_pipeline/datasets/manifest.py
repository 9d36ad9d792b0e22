"""Manifests: one row per video (``video_id, source, label, split[, group]``), validated row by row.

``label`` holds one class, or several separated by ``;`` in a multi-label dataset. ``group`` is optional:
the uploader, channel or performer of a video.

A bad row (missing field, unknown label, duplicate id, an id that could escape a folder) is rejected with
its row number and reason while every good row goes on: one typo must not cost a partition of thousands.

Splits missing from a manifest are assigned here, seeded, 70/15/15 by default (the paper's were not
documented), the way a music-information-retrieval reviewer expects:

* **by group**: every video of one ``group`` lands in one split. Otherwise a model can recognise the
  performer, room or microphone instead of the instrument and the test score flatters it (the "artist
  effect"). A row with an empty group is a group of its own.
* **stratified per label**: each label's videos, not just the whole, are spread 70/15/15, by iterative
  stratification (Sechidis et al. 2011), which also handles multi-label fields and groups; a label with
  at least three videos is owed one in every split. Groups win over stratification, which is best-effort
  when groups are large.
* **rare labels alone**: a label with fewer videos than splits is placed by a seeded draw (one video in
  train, the others in distinct other splits) while every other label stays stratified; one rare class
  never turns stratification off for the whole dataset.
* **deterministic**: the same rows and seed give the same split whatever their order. Rows that already
  have a split keep it, and the empty rows of their group follow them.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from instrec_pipeline.datasets.labels import canonical, is_multilabel, split_labels

log = logging.getLogger(__name__)

COLUMNS = ("video_id", "source", "label", "split")
#: Kept through validation when the manifest has them (written into the partition's manifest table too).
OPTIONAL_COLUMNS = ("group",)
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
    Multi-label fields come back in one canonical spelling (class order). An optional ``group`` column
    is kept (stripped, empty allowed) when present; tables without one come back as before.
    """
    missing = [c for c in ("video_id", "source", "label") if c not in table.columns]
    if missing or (require_split and "split" not in table.columns):
        need = missing or ["split"]
        raise ManifestError(f"manifest lacks column(s) {', '.join(need)}; expected {', '.join(COLUMNS)}")
    table = table.copy()
    if "split" not in table.columns:
        table["split"] = ""
    columns = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in table.columns)]
    table = table[columns].fillna("").astype(str).apply(lambda c: c.str.strip())
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
    table: pd.DataFrame,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    *,
    multilabel: bool | None = None,
) -> pd.DataFrame:
    """Fill empty ``split`` cells by group, stratified per label and seeded (see the module docstring).

    ``fractions`` (train, val, test) apply to the rows being filled. ``multilabel``: labels are
    ``;``-separated (None: when any empty-split row's label holds a ``;``).
    """
    frac = _fractions(fractions)
    table = table.copy()
    todo = table["split"] == ""
    if not todo.any():
        return table
    keys = _unit_keys(table)
    given = table.loc[~todo, "split"].groupby(keys[~todo]).agg(_most_common)
    follow = todo & keys.isin(given.index)  # a group's new rows join the split it already has
    table.loc[follow, "split"] = keys[follow].map(given)
    todo &= ~follow
    if not todo.any():
        return table
    if multilabel is None:
        multilabel = is_multilabel(table.loc[todo, "label"])
    units: dict[str, Counter[str]] = {}
    for key, field in zip(keys[todo], table.loc[todo, "label"], strict=True):
        units.setdefault(key, Counter()).update(split_labels(field) if multilabel else [field])
    sizes = keys[todo].value_counts().to_dict()
    placed = _stratify(units, sizes, frac, np.random.default_rng(seed))
    table.loc[todo, "split"] = keys[todo].map(lambda k: SPLITS[placed[k]])
    return table


def _fractions(fractions: tuple[float, float, float]) -> list[float]:
    values = [float(f) for f in fractions]
    if len(values) != len(SPLITS) or min(values) < 0 or sum(values) <= 0:
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers, not all 0: {fractions}")
    return [f / sum(values) for f in values]


def _unit_keys(table: pd.DataFrame) -> pd.Series:
    """The unit each row is placed with: its group, or the video alone when it has none."""
    ids = "v:" + table["video_id"].astype(str)
    if "group" not in table.columns:
        return ids
    group = table["group"].fillna("").astype(str).str.strip()
    return ids.where(group == "", "g:" + group)


def _most_common(splits: pd.Series) -> str:
    counts = Counter(splits)
    if len(counts) > 1:
        log.warning("a manifest group already spans splits %s; its new rows join the largest", dict(counts))
    return max(counts, key=lambda s: (counts[s], -SPLITS.index(s) if s in SPLITS else -len(SPLITS)))


def _stratify(
    units: Mapping[str, Counter[str]], sizes: Mapping[str, int], frac: list[float], rng: np.random.Generator
) -> dict[str, int]:
    """Iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the stratification of multi-label
    data", ECML PKDD 2011) over units (groups of videos) → split index.

    The label with the fewest unplaced videos goes first (rare labels are the easiest to starve); each of
    its units, largest first and seeded among equals, goes to the split that still wants most of that
    label, ties to the split that wants most videos overall, then at random. A unit moves whole, so groups
    win when they cannot be spread exactly.
    """
    order = sorted(units)
    order = [order[i] for i in rng.permutation(len(order))]
    order.sort(key=lambda u: -sizes[u])  # stable: the seeded order stays among equal sizes
    jitter = dict(zip(order, rng.random((len(order), len(SPLITS))).tolist(), strict=True))
    by_label: dict[str, list[str]] = {}
    totals: Counter[str] = Counter()
    for u in order:
        totals.update(units[u])
        for label in units[u]:
            by_label.setdefault(label, []).append(u)
    want = _quotas(totals, frac, rng)
    left = [f * sum(sizes.values()) for f in frac]
    active = [s for s, f in enumerate(frac) if f > 0]
    remaining = dict(totals)
    placed: dict[str, int] = {}

    def place(u: str, label: str | None) -> None:
        s = max(active, key=lambda s: (want[label][s] if label else 0, left[s], jitter[u][s]))
        placed[u] = s
        left[s] -= sizes[u]
        for other, n in units[u].items():
            want[other][s] -= n
            remaining[other] -= n

    while any(remaining.values()):
        label = min((lab for lab, n in remaining.items() if n > 0), key=lambda lab: (remaining[lab], lab))
        for u in by_label[label]:
            if u not in placed:
                place(u, label)
    for u in order:  # units without any label (only in unvalidated tables)
        if u not in placed:
            place(u, None)
    return placed


def _quotas(totals: Mapping[str, int], frac: list[float], rng: np.random.Generator) -> dict[str, list[int]]:
    """Videos of each label per split: within one of its exact share, and at least one per split when the
    label has as many videos as splits. Rounding leans towards the splits earlier labels left short, so
    the split sizes stay on target. A rarer label gets one video in the largest split and the others in
    distinct other splits, drawn at random (seeded): it stays out of the other labels' stratification.
    """
    active = [s for s, f in enumerate(frac) if f > 0]
    first = max(active, key=lambda s: frac[s])
    carry = [0.0] * len(frac)
    quotas = {}
    for label in sorted(totals, key=lambda lab: (totals[lab], lab)):  # large labels absorb the carry
        n = totals[label]
        exact = [n * f for f in frac]
        q = [0] * len(frac)
        if n < len(active):
            rest = [s for s in active if s != first]
            rng.shuffle(rest)
            for s in [first, *rest][:n]:
                q[s] = 1
        else:
            q = [math.floor(x + 1e-9) for x in exact]
            short = sorted(active, key=lambda s: (exact[s] > q[s], exact[s] - q[s] + carry[s]), reverse=True)
            for s in short[: n - sum(q)]:
                q[s] += 1
            for s in active:
                if q[s] == 0:
                    q[max(active, key=lambda d: q[d])] -= 1
                    q[s] += 1
        carry = [c + x - k for c, x, k in zip(carry, exact, q, strict=True)]
        quotas[label] = q
    return quotas
