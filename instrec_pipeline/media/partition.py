"""Fetch every video of one dataset × split, recording per-video failures instead of failing."""

from __future__ import annotations

import hashlib
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.fetch import FetchPolicy, failure_category, fetch, source_stamp
from instrec_pipeline.parallel import map_unordered
from instrec_pipeline.progress import Progress


@dataclass
class StageSummary:
    """What one stage did to a partition; goes into Dagster metadata."""

    processed: int = 0
    skipped: int = 0
    rows: int = 0  # rows computed (frames embedded …), for rates
    failed: dict[str, str] = field(default_factory=dict)


def fetch_partition(
    table: pd.DataFrame,
    raw_root: Path,
    media_root: Path | None,
    pool: Executor,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    cookies: Path | None = None,
    progress: Progress | None = None,
    policy: FetchPolicy | None = None,
) -> tuple[pd.DataFrame, StageSummary]:
    """Fetch each row's source into the raw store; returns the table with ``raw_path`` and ``error``.

    ``policy``: the dataset's :class:`FetchPolicy` (None: the defaults).
    """
    summary = StageSummary()

    def one(row: tuple[str, str]) -> tuple[str, str]:
        try:
            path = fetch(
                row[1], raw_root, media_root=media_root, retries=retries, timeout=timeout, cookies=cookies,
                policy=policy,
            )  # fmt: skip
            return str(path), ""
        except MediaError as exc:
            return "", exc.reason
        except Exception as exc:  # a bug or an unexpected I/O error must not sink the partition
            return "", f"{type(exc).__name__}: {exc}"

    results: dict[str, tuple[str, str]] = {}
    for (vid, _), result in map_unordered(
        pool, one, list(zip(table["video_id"], table["source"], strict=True))
    ):
        results[vid] = result
        if progress:
            progress.step()
        if result[1]:
            summary.failed[vid] = result[1]
        else:
            summary.processed += 1
    out = table.copy()
    out["raw_path"] = [results[v][0] for v in out["video_id"]]
    out["error"] = [results[v][1] for v in out["video_id"]]
    out["failure"] = [failure_category(e) if e else "" for e in out["error"]]
    return out, summary


def split_versions(table: pd.DataFrame, media_root: Path | None) -> dict[str, str]:
    """Per split, a version of what its extraction would read: its rows (id, source, label, …) and each
    local source file's size and mtime. Same rows, same files: same version, whatever the rows' order."""
    stamps = table.assign(stamp=[source_stamp(str(s), media_root) for s in table["source"]])
    versions = {}
    for split, rows in stamps.groupby("split", sort=True):
        text = rows.sort_values("video_id").to_csv(index=False)
        versions[str(split)] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return versions
