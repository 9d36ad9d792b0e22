"""Data-quality checks of one partition's stored features: plain functions, wrapped as Dagster asset checks.

Each returns a :class:`Finding`: passed or not, a one-line reason, and figures for the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from instrec_pipeline.datasets.labels import class_counts
from instrec_pipeline.store import FRAMES, RaggedArray, audio_modality_name

#: Frames (at 1 fps) and audio of a video may differ by up to this many seconds (rounding, encoder delay).
DURATION_TOLERANCE_S = 1.5


@dataclass
class Finding:
    passed: bool
    reason: str
    figures: dict[str, float | int | str] = field(default_factory=dict)


def demux_coverage(
    manifest: pd.DataFrame, group: zarr.Group, failures: dict[str, str], max_failed_ratio: float
) -> Finding:
    """Every manifest video is stored or reported failed, and failures stay under ``max_failed_ratio``."""
    stored = set(RaggedArray.read(group, FRAMES).video_ids) if FRAMES in group else set()
    wanted = set(manifest["video_id"])
    unaccounted = sorted(wanted - stored - set(failures))
    ratio = len(wanted & set(failures)) / max(1, len(wanted))
    figures = {"videos": len(wanted), "stored": len(wanted & stored), "failed": len(wanted & set(failures)),
               "failed_ratio": round(ratio, 4), "unaccounted": len(unaccounted)}  # fmt: skip
    if unaccounted:
        return Finding(
            False, f"{len(unaccounted)} video(s) neither stored nor failed: {unaccounted[:5]}", figures
        )
    if ratio > max_failed_ratio:
        return Finding(False, f"{ratio:.0%} of the videos failed (limit {max_failed_ratio:.0%})", figures)
    return Finding(True, f"{len(wanted & stored)} of {len(wanted)} videos stored", figures)


def same_videos(group: zarr.Group, names: list[str]) -> Finding:
    """Each modality holds exactly the videos of the frames index, once each (a store that two writers
    interleaved, or one that lost a video in one modality only, fails here)."""
    try:
        frames = set(RaggedArray.read(group, FRAMES).video_ids)
        held = {name: RaggedArray.read(group, name).video_ids for name in names}
    except (KeyError, ValueError) as exc:  # a missing modality, or duplicate ids refused on open
        return Finding(False, f"cannot read the index: {exc}", {})
    figures: dict[str, float | int | str] = {"frames_videos": len(frames)}
    bad = []
    for name, ids in held.items():
        missing, extra = frames - set(ids), set(ids) - frames
        figures[f"{name}_missing"], figures[f"{name}_extra"] = len(missing), len(extra)
        if missing or extra:
            bad.append(
                f"{name}: {len(missing)} missing {sorted(missing)[:3]},"
                f" {len(extra)} extra {sorted(extra)[:3]}"
            )
    if bad:
        return Finding(False, "; ".join(bad), figures)
    same = f"{', '.join(names)}: the same {len(frames)} videos as the frames, once each"
    return Finding(True, same, figures)


def durations_agree(group: zarr.Group, fps: float, sample_rate: int) -> Finding:
    """Frames and audio of each video span the same time (within ``DURATION_TOLERANCE_S``)."""
    frames = RaggedArray.read(group, FRAMES).lengths()
    audio = RaggedArray.read(group, audio_modality_name(sample_rate)).lengths()
    both = [v for v in frames if frames[v] and audio.get(v)]
    gaps = {v: abs(frames[v] / fps - audio[v] / sample_rate) for v in both}
    bad = sorted(v for v, g in gaps.items() if g > DURATION_TOLERANCE_S)
    figures = {
        "compared": len(both),
        "max_gap_s": round(max(gaps.values(), default=0.0), 3),
        "disagree": len(bad),
    }
    if bad:
        return Finding(
            False, f"{len(bad)} video(s) whose frames and audio disagree in length: {bad[:5]}", figures
        )
    return Finding(
        True, f"{len(both)} videos: frames and audio agree within {DURATION_TOLERANCE_S} s", figures
    )


def rows_valid(
    group: zarr.Group, name: str, width: int, expected_rows: dict[str, int] | None = None
) -> Finding:
    """Shape ``(rows, width)``, float32, finite values; optionally the row count of each video."""
    arr = RaggedArray.read(group, name)
    data = group[f"{name}/data"]
    figures: dict[str, float | int | str] = {"videos": len(arr), "rows": arr.n_rows, "dtype": str(data.dtype)}
    if tuple(data.shape[1:]) != (width,) or data.dtype != np.float32:
        return Finding(
            False, f"{name}: rows {data.shape[1:]} {data.dtype}, expected ({width},) float32", figures
        )
    bad = [v for v, rows in arr.iter_videos() if not np.isfinite(rows).all()]  # block by block
    figures["non_finite_videos"] = len(bad)
    if bad:
        return Finding(False, f"{name}: NaN or Inf in {len(bad)} video(s): {bad[:5]}", figures)
    if expected_rows is not None:
        lengths = arr.lengths()
        wrong = sorted(v for v, n in expected_rows.items() if lengths.get(v) != n)
        if wrong:
            return Finding(False, f"{name}: row counts differ from the source for {wrong[:5]}", figures)
    return Finding(True, f"{name}: {len(arr)} videos, {arr.n_rows} rows of {width} finite float32", figures)


def _digests(raw: pd.DataFrame) -> dict[str, str]:
    """Raw content digest (the raw store names files by it) → video id, for the fetched videos."""
    return {Path(p).stem: v for v, p in zip(raw["video_id"], raw["raw_path"], strict=True) if p}


def splits_clean(
    manifests: dict[str, pd.DataFrame], raw: dict[str, pd.DataFrame], params: dict[str, dict[str, str]]
) -> Finding:
    """Before any model trains: no video in two splits (by id, and by the raw content digest, which is the
    raw store's file name), and every split extracted with the same parameters (weights digest, fps,
    geometry, mel settings: the modalities' parameter digests)."""
    problems = []
    splits = sorted(manifests)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            same_id = set(manifests[a]["video_id"]) & set(manifests[b]["video_id"])
            if same_id:
                problems.append(f"{len(same_id)} video id(s) in both {a} and {b}: {sorted(same_id)[:3]}")
            digests = {s: _digests(raw[s]) for s in (a, b) if s in raw}
            if len(digests) == 2:
                same = set(digests[a]) & set(digests[b])
                pairs = [f"{digests[a][d]} ({a}) = {digests[b][d]} ({b})" for d in sorted(same)[:3]]
                if same:
                    problems.append(f"{len(same)} identical file(s) in {a} and {b}: {pairs}")
    modalities = sorted({m for per_split in params.values() for m in per_split})
    for m in modalities:
        seen = {s: params[s].get(m) for s in splits if params.get(s, {}).get(m)}
        if len(set(seen.values())) > 1:
            problems.append(f"{m} extracted with different parameters across splits: {seen}")
    figures = {"splits": len(splits), "modalities_compared": len(modalities), "problems": len(problems)}
    if problems:
        return Finding(False, "; ".join(problems), figures)
    return Finding(True, f"splits {', '.join(splits)} disjoint and extracted alike", figures)


def classes_covered(manifest: pd.DataFrame, classes: list[str]) -> Finding:
    """Every class has at least one video (checked on the train split: a class never trained is lost)."""
    counts = class_counts(manifest["label"], classes)
    missing = [c for c, n in counts.items() if n == 0]
    figures = {
        "classes": len(classes),
        "missing": len(missing),
        "smallest": int(counts.min()) if len(counts) else 0,
    }
    if missing:
        return Finding(False, f"no video of class(es) {missing}", figures)
    return Finding(
        True, f"all {len(classes)} classes present (smallest: {int(counts.min())} videos)", figures
    )
