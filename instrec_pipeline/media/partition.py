"""Fetch and demux every video of one dataset × split, recording per-video failures instead of failing.

Results are committed to the feature store in small batches as they arrive, so a crash loses at most the
batch in flight and a re-run skips every committed video.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from instrec_pipeline.features.store import RaggedArray
from instrec_pipeline.media.demux import Demuxed, DemuxParams, demux
from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.fetch import fetch
from instrec_pipeline.parallel import map_unordered

#: Commit to the store after this many videos (or this many bytes), whichever comes first.
COMMIT_VIDEOS = 16
COMMIT_BYTES = 256 * 1024 * 1024


@dataclass
class StageSummary:
    """What one stage did to a partition; goes into Dagster metadata."""

    processed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.processed + self.skipped + len(self.failed)


def fetch_partition(
    table: pd.DataFrame,
    raw_root: Path,
    media_root: Path | None,
    pool: Executor,
    *,
    retries: int = 3,
    timeout: float = 60.0,
) -> tuple[pd.DataFrame, StageSummary]:
    """Fetch each row's source into the raw store; returns the table with ``raw_path`` and ``error``."""
    summary = StageSummary()

    def one(row: tuple[str, str]) -> tuple[str, str]:
        try:
            return str(fetch(row[1], raw_root, media_root=media_root, retries=retries, timeout=timeout)), ""
        except MediaError as exc:
            return "", exc.reason
        except Exception as exc:  # a bug or an unexpected I/O error must not sink the partition
            return "", f"{type(exc).__name__}: {exc}"

    results: dict[str, tuple[str, str]] = {}
    for (vid, _), result in map_unordered(
        pool, one, list(zip(table["video_id"], table["source"], strict=True))
    ):
        results[vid] = result
        if result[1]:
            summary.failed[vid] = result[1]
        else:
            summary.processed += 1
    out = table.copy()
    out["raw_path"] = [results[v][0] for v in out["video_id"]]
    out["error"] = [results[v][1] for v in out["video_id"]]
    return out, summary


def _frames_modality(group: zarr.Group, params: DemuxParams) -> RaggedArray:
    return RaggedArray.open(
        group, "frames", (params.crop, params.crop, 3), "uint8",
        {"fps": params.fps, "resize": params.resize, "crop": params.crop, "layout": "HWC RGB uint8"},
    )  # fmt: skip


def audio_modality_name(sample_rate: int) -> str:
    return f"audio_{sample_rate}"


def _audio_modality(group: zarr.Group, sample_rate: int) -> RaggedArray:
    return RaggedArray.open(
        group, audio_modality_name(sample_rate), (), "float32",
        {"sample_rate": sample_rate, "channels": "mono (mean of channels)", "resampler": "soxr"},
    )  # fmt: skip


def demux_partition(
    raw: pd.DataFrame, group: zarr.Group, params: DemuxParams, pool: Executor
) -> StageSummary:
    """Demux every fetched video not yet in the store: frames at ``params.fps`` and mono audio per rate.

    A video without audio stores zero audio samples (a missing modality downstream), an audio-only file
    zero frames; a video that ffmpeg cannot read is recorded with its reason and retried on the next run.
    """
    frames = _frames_modality(group, params)
    audio = {sr: _audio_modality(group, sr) for sr in params.sample_rates}
    summary = StageSummary()
    todo = []
    for vid, path, error in zip(raw["video_id"], raw["raw_path"], raw["error"], strict=True):
        if error:
            summary.failed[vid] = f"not fetched: {error}"
        elif vid in frames and all(vid in a for a in audio.values()):
            summary.skipped += 1
        else:
            todo.append((vid, path))

    def one(item: tuple[str, str]) -> Demuxed | str:
        try:
            return demux(Path(item[1]), params)
        except MediaError as exc:
            return exc.reason
        except Exception as exc:  # keep the partition going; the reason is reported per video
            return f"{type(exc).__name__}: {exc}"

    batch: list[tuple[str, Demuxed]] = []
    batch_bytes = 0

    def commit() -> None:
        # Audio first, frames last: ``frames`` is the index the skip test reads first.
        for sr, modality in audio.items():
            modality.append([(v, d.audio.get(sr, np.zeros(0, np.float32))) for v, d in batch])
        frames.append([(v, d.frames) for v, d in batch])
        batch.clear()

    for (vid, _), result in map_unordered(pool, one, todo):
        if isinstance(result, str):
            summary.failed[vid] = result
            continue
        batch.append((vid, result))
        batch_bytes += result.frames.nbytes + sum(a.nbytes for a in result.audio.values())
        summary.processed += 1
        if len(batch) >= COMMIT_VIDEOS or batch_bytes >= COMMIT_BYTES:
            commit()
            batch_bytes = 0
    if batch:
        commit()
    return summary
