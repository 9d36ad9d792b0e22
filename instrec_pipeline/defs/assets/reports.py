"""evaluation_report: every model's test-split scores beside the paper's, shown in the Dagster UI."""

import math

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, TableRecord, asset

from instrec_pipeline.datasets.registry import datasets
from instrec_pipeline.defs.automation.declarative import ON_NEW_FEATURES
from instrec_pipeline.defs.partitions import dataset_partitions
from instrec_pipeline.defs.resources import ComputeResource, StoreResource
from instrec_pipeline.evaluation.evaluate import evaluate_dataset
from instrec_pipeline.features.visual import resolve_device
from instrec_pipeline.models import AUDIO_MODELS


def _cell(value: object) -> str | int | float | bool | None:
    """A summary value as a table cell (NaN → empty)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


@asset(
    partitions_def=dataset_partitions,
    group_name="reports",
    kinds={"scikitlearn", "matplotlib"},
    automation_condition=ON_NEW_FEATURES,
    deps=["fusion_model", *(f"audio_model_{name}" for name in AUDIO_MODELS)],
    code_version="4",  # 2: multi-label; 3: intervals, floors, flags, provenance; 4: OOF fusion, seeds
)
def evaluation_report(
    context: AssetExecutionContext, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """Hit@1, Hit@3, F1 (macro, weighted), per-class tables, confusion matrices, t-SNE and curves; for
    multi-label datasets ROC-AUC, PR-AUC and F1 micro/macro at val-tuned thresholds."""
    dataset = context.partition_key
    spec = datasets()[dataset]
    report = evaluate_dataset(
        store.layout,
        dataset,
        list(spec.classes),
        list(AUDIO_MODELS),
        resolve_device(compute.device),
        paper_dataset=spec.paper_reference,
        extra_provenance={"split": f"assigned with the dataset's split seed {spec.split_seed}"},
        seeds=spec.seeds,
    )
    metadata: dict[str, object] = {
        "report": MetadataValue.md(report.markdown),
        "path": MetadataValue.path(str(report.files["report.md"])),
        "flags": sum(len(f) for f in report.flags.values()),
        "flagged_rows": MetadataValue.json(report.flags),
        "comparisons": MetadataValue.md("\n".join(f"- {c}" for c in report.comparisons) or "none"),
        "summary": MetadataValue.table(
            records=[TableRecord({k: _cell(v) for k, v in r.items()})
                     for r in report.summary.to_dict("records")],
        ),
    }
    for key, s in report.scores.items():
        name, value = s.headline()
        metadata[f"{key}_{name}"] = round(value, 4)
    return MaterializeResult(metadata=metadata)
