"""Fetch and demux every video of one dataset × split, recording per-video failures instead of failing.

Each video is committed to the feature store as soon as it is demuxed, so a crash loses at most the videos
in flight and a re-run skips every committed one.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import zarr

from instrec_pipeline.features.store import RaggedArray
from instrec_pipeline.media.demux import DemuxParams, Spooled, demux_to_spool
from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.fetch import fetch
from instrec_pipeline.parallel import map_unordered


@dataclass
class StageSummary:
    """What one stage did to a partition; goes into Dagster metadata."""

    processed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)


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
    raw: pd.DataFrame, group: zarr.Group, params: DemuxParams, pool: Executor, spool_root: Path
) -> StageSummary:
    """Demux every fetched video not yet in the store: frames at ``params.fps`` and mono audio per rate.

    Workers run ffmpeg and park each result on local disk (:func:`demux_to_spool`); this thread, the
    store's only writer, copies it in bounded chunks and commits it. Memory stays at a few chunks per
    worker whatever the videos' lengths. A video without audio stores zero audio samples (a missing
    modality downstream), an audio-only file zero frames; one that ffmpeg cannot read is recorded with its
    reason and retried on the next run.
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
    spool_root.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, str]) -> tuple[Spooled | str, Path]:
        spool = Path(tempfile.mkdtemp(prefix="demux-", dir=spool_root))
        try:
            return demux_to_spool(Path(item[1]), params, spool), spool
        except MediaError as exc:
            return exc.reason, spool
        except Exception as exc:  # keep the partition going; the reason is reported per video
            return f"{type(exc).__name__}: {exc}", spool

    for (vid, _), (result, spool) in map_unordered(pool, one, todo):
        try:
            if isinstance(result, str):
                summary.failed[vid] = result
                continue
            # Audio first, frames last: ``frames`` is the index the skip test reads first.
            for sr, modality in audio.items():
                modality.append_stream(vid, result.audio_chunks(sr))
            frames.append_stream(vid, result.frame_chunks())
            summary.processed += 1
        finally:
            shutil.rmtree(spool, ignore_errors=True)
    return summary
