"""Small helpers the asset modules share: partition parsing and metadata tables."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableRecord, TableSchema

from instrec_pipeline.defs.automation.declarative import ON_NEW_MANIFEST
from instrec_pipeline.defs.executors import GPU_STEP_TAGS
from instrec_pipeline.defs.partitions import dataset_split_partitions, split_key
from instrec_pipeline.defs.resources import StoreResource
from instrec_pipeline.progress import Progress

MAX_TABLE_ROWS = 200
#: What makes an asset a GPU stage: the ``gpu`` pool (one at a time per instance's limit) and, under the
#: Celery executor, the ``gpu`` queue that only GPU workers serve.
GPU_STAGE: dict[str, object] = {"pool": "gpu", "op_tags": GPU_STEP_TAGS}
#: What the five extraction assets share: one dataset × split each, run when its manifest changed.
EXTRACTION_STAGE: dict[str, object] = {
    "partitions_def": dataset_split_partitions, "code_version": "1", "automation_condition": ON_NEW_MANIFEST,
}  # fmt: skip


def partition(context: AssetExecutionContext) -> tuple[str, str]:
    return split_key(context.partition_key)


def writing(context: AssetExecutionContext, store: StoreResource) -> AbstractContextManager[None]:
    """The partition's writer lock for this step: a second run of the partition waits, then fails clearly."""
    dataset, split = partition(context)
    return store.layout.features.lock(dataset, split, f"run {context.run_id}", store.lock_wait_s)


def progress(context: AssetExecutionContext, stage: str) -> Progress:
    """Progress of a partition's stage in the run's logs (done/total, videos/s, ETA)."""
    return Progress(f"{stage} {context.partition_key}", 0, context.log.info)


def rate_metadata(p: Progress, rows: int) -> dict[str, object]:
    """Numeric figures the UI plots over materialisations, and the stage's row count."""
    return {**p.metadata(), "dagster/row_count": rows}


def failures_table(failures: Mapping[str, str]) -> MetadataValue:
    """Failed videos with their reasons, as a table the UI shows (the first 200; the count is separate)."""
    rows = sorted(failures.items())[:MAX_TABLE_ROWS]
    return MetadataValue.table(
        records=[TableRecord({"video_id": v, "reason": r}) for v, r in rows],
        schema=TableSchema(columns=[TableColumn("video_id", "string"), TableColumn("reason", "string")]),
    )
