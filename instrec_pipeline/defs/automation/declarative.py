"""Declarative automation: the manifests as observed sources, extraction when they change, models opt-in.

- ``manifest_file`` is an observable source asset per dataset × split: its data version is a digest of the
  split's manifest rows and of its local source files' size and mtime (media/partition.py
  ``split_versions``). It is observed on ``$INSTREC_REEXTRACT_CRON`` for the scheduled datasets
  (``$INSTREC_REEXTRACT_DATASETS``, default every dataset but the paper's YouTube lists), and whenever
  somebody clicks *Observe sources* in the UI.
- The extraction assets run for a partition when its observed version changed (:data:`ON_NEW_MANIFEST`):
  an unchanged partition launches nothing; a changed row re-runs only its dataset × split, and its stages
  process only new or changed videos.
- The models and the report retrain when their features' data versions change (:data:`ON_NEW_FEATURES`).

Each concern has its own automation sensor, both off by default (switch them on under Automation):
``extraction_automation`` (observations + extraction) and ``model_automation`` (training and the report:
hours on CPU, hence opt-in). The UI's automation view shows, per partition, which condition fired.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster import AutomationCondition as AC  # noqa: N817 - the conditions read as a formula

from instrec_pipeline.datasets.registry import datasets, load_manifest
from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS
from instrec_pipeline.defs.partitions import dataset_split_partitions, split_key
from instrec_pipeline.defs.resources import StoreResource
from instrec_pipeline.media.partition import split_versions
from instrec_pipeline.settings import ReextractionSettings

SOURCE = "manifest_file"
MODEL_GROUPS = ("models", "reports")
#: Left out unless named: the paper's lists (66 k YouTube ids) are better fetched by a deliberate backfill.
NOT_SCHEDULED_BY_DEFAULT = ("fcvid", "yt8m")

#: Runs when the partition's input changed (a new observed version upstream, or an upstream asset of the
#: same run requested): the five extraction assets of a partition then run together in one run.
ON_NEW_MANIFEST = (
    AC.any_deps_updated().since_last_handled()
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
).with_label("its manifest rows or source files changed")

#: Retrains when what it reads changed: a new data version of an upstream partition (an unchanged
#: re-extraction keeps its version, so it retrains nothing), or an upstream model requested in the same tick.
ON_NEW_FEATURES = (
    AC.any_deps_match(AC.data_version_changed() | AC.will_be_requested()).since_last_handled()
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
).with_label("its input data changed")


class InDatasets(AC):
    """True for the partitions of the named datasets (Dagster has no built-in partition filter)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    @property
    def description(self) -> str:
        return f"dataset in {', '.join(self.names) or '(none)'}"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        keys = {k for k in candidates.expensively_compute_partition_keys() if split_key(k)[0] in self.names}
        return dg.AutomationResult(context, candidates.compute_intersection_with_partition_keys(keys))


def scheduled_datasets(settings: ReextractionSettings) -> list[str]:
    """The known datasets named by ``INSTREC_REEXTRACT_DATASETS``; unset: all but the paper's two lists."""
    known = list(datasets())
    if settings.datasets:
        return [d for d in settings.datasets if d in known]
    return [d for d in known if d not in NOT_SCHEDULED_BY_DEFAULT]


def manifest_versions(store: StoreResource, keys: Sequence[str]) -> dict[str, dg.DataVersion]:
    """``dataset|split`` → the observed version of that split's list; a demo not yet generated is skipped
    (an observation must not generate media)."""
    layout = store.layout
    versions = {}
    for name in sorted({split_key(k)[0] for k in keys}):
        if name == "demo" and not (layout.dataset_dir(name) / "manifest.csv").exists():
            continue
        table = load_manifest(name, layout.dataset_dir(name)).table
        wanted = table[[f"{name}|{s}" in keys for s in table["split"]]]  # only the observed splits' files
        media_root = datasets()[name].media_dir(layout.dataset_dir(name))
        for split, version in split_versions(wanted, media_root).items():
            versions[f"{name}|{split}"] = dg.DataVersion(version)
    return versions


def manifest_file(settings: ReextractionSettings) -> dg.SourceAsset:
    """The observable source, observed on the settings' cron for the scheduled datasets."""
    names = scheduled_datasets(settings)

    @dg.observable_source_asset(
        name=SOURCE,
        partitions_def=dataset_split_partitions,
        group_name="videos",
        tags={"dagster/kind/csv": ""},
        description="A dataset's list of videos as its owner keeps it (CSV/Parquet, the paper's lists, the "
        "generated demo), observed: its version per dataset × split is a digest of the split's rows and "
        f"local files. Observed on '{settings.cron}' for {', '.join(names) or 'no dataset'}.",
        automation_condition=(AC.cron_tick_passed(settings.cron) & InDatasets(names)).with_label(
            f"observe on '{settings.cron}'"
        ),
    )
    def _observe(context: dg.OpExecutionContext, store: StoreResource) -> dg.DataVersionsByPartition:
        keys = [context.partition_key] if context.has_partition_key else [
            k for k in dataset_split_partitions.get_partition_keys() if split_key(k)[0] in names
        ]  # fmt: skip
        return dg.DataVersionsByPartition(manifest_versions(store, keys))

    return _observe


def automation_sensors() -> list[dg.AutomationConditionSensorDefinition]:
    """Extraction and models each under their own switch, both off until a user turns them on."""
    return [
        dg.AutomationConditionSensorDefinition(
            "extraction_automation",
            target=dg.AssetSelection.assets(SOURCE, *EXTRACTION_ASSETS),
            default_status=dg.DefaultSensorStatus.STOPPED,
            use_user_code_server=True,  # InDatasets is evaluated in the code location
            description="Observes the manifests on the cron and extracts the dataset × split partitions "
            "whose rows or files changed.",
        ),
        dg.AutomationConditionSensorDefinition(
            "model_automation",
            target=dg.AssetSelection.groups(*MODEL_GROUPS),
            default_status=dg.DefaultSensorStatus.STOPPED,
            description="Retrains a dataset's models and rewrites its report when its features changed.",
        ),
    ]


@dg.definitions
def automation_defs() -> dg.Definitions:
    """Built when the code location loads: ``INSTREC_REEXTRACT_CRON`` / ``_DATASETS`` are read then."""
    return dg.Definitions(assets=[manifest_file(ReextractionSettings.read())], sensors=automation_sensors())
