"""A sensor that notices a changed manifest and requests extraction runs for the affected partitions only.

Its cursor keeps one digest per dataset × split (the rows of that split); a partition whose digest changed
— rows added, removed, relabelled, re-sourced — gets a run. The demo's manifest is only watched once
generated (a sensor must not generate media).
"""

import hashlib
import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.datasets.registry import datasets, load_manifest
from instrec_pipeline.defs.partitions import dataset_split_partitions
from instrec_pipeline.defs.resources import StoreResource


def split_digests(store: StoreResource, names: list[str]) -> dict[str, str]:
    """``dataset|split`` → digest of that split's validated rows, for the datasets whose manifest exists."""
    layout = store.layout
    digests = {}
    for name in names:
        if name == "demo" and not (layout.dataset_dir(name) / "manifest.csv").exists():
            continue
        table = load_manifest(name, layout.dataset_dir(name)).table
        for split in SPLITS:
            rows = table[table["split"] == split].sort_values("video_id").to_csv(index=False)
            digests[f"{name}|{split}"] = hashlib.sha256(rows.encode()).hexdigest()[:16]
    return digests


@sensor(
    job_name="extraction_job",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description="Runs extraction for the dataset × split partitions whose manifest rows changed.",
)
def manifest_change_sensor(context: SensorEvaluationContext, store: StoreResource):  # noqa: ANN201
    watched = [d for d in datasets() if d not in ("fcvid", "yt8m")]
    current = split_digests(store, watched)
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(k for k, v in current.items() if previous.get(k) != v)
    context.update_cursor(json.dumps(current))
    if not changed:
        return SkipReason("no manifest changed")
    return [
        RunRequest(run_key=f"manifest:{key}:{current[key]}", partition_key=key,
                   tags=dataset_split_partitions.get_tags_for_partition_key(key))
        for key in changed
    ]  # fmt: skip
