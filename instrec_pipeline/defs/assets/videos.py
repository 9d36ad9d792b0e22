"""manifest → raw_videos → demux: per dataset × split."""

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from instrec_pipeline.datasets.labels import class_counts
from instrec_pipeline.datasets.registry import datasets, load_manifest
from instrec_pipeline.defs.assets.common import (
    EXTRACTION_STAGE,
    failures_table,
    partition,
    progress,
    rate_metadata,
    writing,
)
from instrec_pipeline.defs.automation.declarative import SOURCE
from instrec_pipeline.defs.resources import ComputeResource, ExtractionResource, MediaResource, StoreResource
from instrec_pipeline.features.footprint import footprint
from instrec_pipeline.features.logmel import MEL_INPUTS
from instrec_pipeline.features.partition import demux_partition
from instrec_pipeline.features.visual import resolve_device
from instrec_pipeline.media.fetch import FetchPolicy
from instrec_pipeline.media.partition import fetch_partition
from instrec_pipeline.parallel import executor
from instrec_pipeline.store import Frames
from instrec_pipeline.store.layout import read_csv, write_csv_atomic

GROUP = "videos"
SAMPLE_RATES = tuple(sorted({m.sample_rate for m in MEL_INPUTS.values()}))


@asset(
    group_name=GROUP,
    **EXTRACTION_STAGE,
    deps=[SOURCE],
    kinds={"pandas", "csv"},
)
def manifest(
    context: AssetExecutionContext, store: StoreResource, extraction: ExtractionResource
) -> MaterializeResult:
    """The validated list of videos of one dataset × split (id, source, label); bad rows reported by row."""
    dataset, split = partition(context)
    with writing(context, store):
        layout = store.layout
        m = load_manifest(dataset, layout.dataset_dir(dataset))
        table = m.table[m.table["split"] == split].reset_index(drop=True)
        path = layout.table(dataset, split, "manifest")
        write_csv_atomic(table, path)
        for r in m.rejected[:50]:
            context.log.warning(f"manifest {dataset}: rejected {r}")
        counts = class_counts(table["label"], m.classes)
        disk = _disk_estimate(context, dataset, table, layout.root, extraction)
        return MaterializeResult(
            metadata={
                **disk,
                "dagster/row_count": len(table),
                "videos": len(table),
                "rejected_rows": len(m.rejected),
                "rejected": MetadataValue.md("\n".join(f"- {r}" for r in m.rejected[:200]) or "none"),
                "per_class": MetadataValue.json({k: int(v) for k, v in counts.items()}),
                "path": MetadataValue.path(str(path)),
            },
            data_version=DataVersion(hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()[:16]),
        )


def _disk_estimate(
    context: AssetExecutionContext,
    dataset: str,
    table: pd.DataFrame,
    root: Path,
    extraction: ExtractionResource,
) -> dict[str, object]:
    """What the partition's extraction will need on disk (from known durations), beside what is free."""
    spec = datasets()[dataset]
    known = spec.durations() if spec.durations else pd.Series(dtype=float)
    seconds = known.reindex(table["video_id"]).dropna()
    if seconds.empty:
        return {"disk_estimate": MetadataValue.md("video durations unknown: no estimate")}
    total = float(seconds.mean()) * len(table)  # videos without a known duration count at the mean
    parts = footprint(total, extraction.fps, extraction.crop, extraction.frame_codec(), SAMPLE_RATES,
                      MEL_INPUTS.values())  # fmt: skip
    need = sum(parts.values())
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if need > free:
        context.log.warning(f"{context.partition_key} needs ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free")
    rows = "\n".join(f"| {k} | {v / 1e9:,.2f} |" for k, v in {**parts, "**total**": need}.items())
    return {
        "hours": round(total / 3600, 2),
        "durations_known": len(seconds),
        "disk_estimate_gb": round(need / 1e9, 2),
        "disk_free_gb": round(free / 1e9, 2),
        "disk_estimate": MetadataValue.md(f"| part | GB |\n|---|---|\n{rows}"),
    }


@asset(
    group_name=GROUP,
    **EXTRACTION_STAGE,
    deps=[manifest],
    kinds={"python", "youtube"},  # local files, http(s) and yt-dlp
)
def raw_videos(
    context: AssetExecutionContext, store: StoreResource, compute: ComputeResource, media: MediaResource
) -> MaterializeResult:
    """Each video fetched into the content-addressed raw store; already-fetched ones are skipped."""
    dataset, split = partition(context)
    with writing(context, store):
        layout = store.layout
        table = read_csv(layout.table(dataset, split, "manifest"))
        spec = datasets()[dataset]
        media_root = spec.media_dir(layout.dataset_dir(dataset))
        policy = FetchPolicy(
            allow_absolute_paths=spec.allow_absolute_paths, allow_hosts=spec.allow_hosts,
            allow_networks=spec.allow_networks, max_bytes=media.max_bytes, deadline_s=media.fetch_deadline_s,
        )  # fmt: skip
        p = progress(context, "raw_videos")
        p.total = len(table)
        with executor(compute.pool_size, compute.dask_scheduler) as pool:
            out, summary = fetch_partition(
                table, layout.raw, media_root, pool, retries=media.retries, timeout=media.timeout_s,
                cookies=media.cookies, policy=policy, progress=p,
            )
        p.finish()
        path = layout.table(dataset, split, "raw_videos")
        write_csv_atomic(out, path)
        digest = hashlib.sha256(out[["video_id", "raw_path"]].to_csv(index=False).encode()).hexdigest()[:16]
        return MaterializeResult(
            metadata={
                "videos": len(out),
                "fetched": summary.processed,
                "failed": len(summary.failed),
                "failed_by_reason": MetadataValue.json(
                    dict(Counter(out.loc[out["failure"] != "", "failure"]).most_common())
                ),
                **rate_metadata(p, len(out)),
                "failures": failures_table(summary.failed),
                "path": MetadataValue.path(str(path)),
            },
            data_version=DataVersion(digest),
        )


@asset(
    group_name=GROUP,
    **EXTRACTION_STAGE,
    deps=[raw_videos],
    kinds={"python", "ffmpeg", "zarr"},
)
def demux(
    context: AssetExecutionContext,
    store: StoreResource,
    compute: ComputeResource,
    extraction: ExtractionResource,
    media: MediaResource,
) -> MaterializeResult:
    """Frames at 1 fps (RGB, resized and centre-cropped) and mono audio at each model's sample rate."""
    dataset, split = partition(context)
    with writing(context, store):
        layout = store.layout
        raw = read_csv(layout.table(dataset, split, "raw_videos"))
        device = str(resolve_device(compute.device))  # torchcodec's (NVDEC on CUDA); ffmpeg runs on the CPU
        params = extraction.demux_params(SAMPLE_RATES, media.max_duration_s, device)
        group = layout.features.group(dataset, split)
        p = progress(context, "demux")
        with executor(compute.pool_size, compute.dask_scheduler) as pool:
            spool = layout.spool(dataset, split)
            summary = demux_partition(raw, group, params, pool, spool, extraction.frame_codec(), p)
        p.finish()
        layout.features.record_failures(dataset, split, "demux", summary.failed)
        frames = Frames.read(group).array
        return MaterializeResult(
            metadata={
                "videos": len(frames),
                "processed": summary.processed,
                "skipped": summary.skipped,
                "failed": len(summary.failed),
                "failures": failures_table(summary.failed),
                **rate_metadata(p, len(frames)),
                "frames": frames.n_rows,
                "params": MetadataValue.json(frames.params),
                "zarr": MetadataValue.path(str(layout.features.group_path(dataset, split))),
            },
            data_version=DataVersion(frames.data_version()),
        )
