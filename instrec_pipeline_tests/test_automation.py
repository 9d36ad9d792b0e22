"""Declarative automation on the real definitions: the manifests observed on the cron, extraction only for
the partitions whose rows changed, and only their new videos processed."""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from instrec_pipeline.store.layout import Layout

TICK = datetime(2026, 11, 30, 3, 0)  # the default cron, 0 3 * * *


class Automation:
    """An automation sensor's conditions evaluated tick by tick, its requests run as the daemon would:
    one run per partition with the assets requested for it."""

    def __init__(self, instance: dg.DagsterInstance, sensor: str) -> None:
        from instrec_pipeline.definitions import defs

        self.defs = defs()
        sensor = next(s for s in self.defs.sensors or [] if s.name == sensor)
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # off until a user turns it on
        self.selection = sensor.asset_selection
        self.keys = sorted(self.selection.resolve(self.defs.resolve_asset_graph()), key=str)
        self.instance = instance
        self.cursor = None

    def tick(self, at: datetime) -> tuple[dict[str, list[str]], dg.EvaluateAutomationConditionsResult]:
        result = dg.evaluate_automation_conditions(self.defs, self.instance, asset_selection=self.selection,
                                                   evaluation_time=at, cursor=self.cursor)  # fmt: skip
        self.cursor = result.cursor
        runs: dict[str, list[str]] = defaultdict(list)
        for key in self.keys:
            for partition in result.get_requested_partitions(key):
                runs[str(partition)].append(key.to_user_string())
        return dict(runs), result

    def run(self, runs: dict[str, list[str]]) -> dict[str, dg.ExecuteInProcessResult]:
        done = {}
        for partition, names in runs.items():
            keys = [dg.AssetKey(n) for n in names]
            job = self.defs.resolve_implicit_job_def_def_for_assets(keys)
            done[partition] = job.execute_in_process(instance=self.instance, asset_selection=keys,
                                                     partition_key=partition)  # fmt: skip
            assert done[partition].success, partition
        return done


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_extraction_follows_the_observed_manifests(
    materialised: tuple[Layout, dg.DagsterInstance], tiny_dataset: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    layout, _ = materialised
    shutil.copytree(layout.root, tmp_path / "store")  # the session's store stays as the other tests expect
    monkeypatch.setenv("INSTREC_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("INSTREC_REEXTRACT_DATASETS", "tiny")
    instance = dg.DagsterInstance.ephemeral()
    auto = Automation(instance, "extraction_automation")
    models = Automation(instance, "model_automation")  # evaluated only: training is another test's cost
    tiny = {"tiny|train", "tiny|val", "tiny|test"}
    extraction = ["demux", "frame_embeddings", "log_mel", "manifest", "raw_videos"]
    retrain = {"tiny": [k.to_user_string() for k in models.keys]}
    assert set(retrain["tiny"]) >= {"audio_model_choi", "video_model", "fusion_model", "evaluation_report"}

    runs, _ = auto.tick(TICK - timedelta(minutes=5))
    assert runs == {}  # before the cron tick: nothing
    runs, _ = auto.tick(TICK + timedelta(minutes=1))
    assert runs == {k: ["manifest_file"] for k in tiny}  # observations only, the named dataset only
    auto.run(runs)
    # First observation: every partition has a version where it had none, so each is extracted once —
    # and, the store being complete, processes no video.
    runs, _ = auto.tick(TICK + timedelta(minutes=2))
    assert runs == {k: extraction for k in tiny}
    done = auto.run(runs)
    for result in done.values():
        assert _metadata(result, "demux")["processed"] == 0
        assert _metadata(result, "frame_embeddings")["processed"] == 0
    assert models.tick(TICK + timedelta(minutes=3))[0] == {}  # its first tick sets where it starts from

    # The next night, nothing changed: the manifests are observed, nothing is extracted.
    runs, _ = auto.tick(TICK + timedelta(days=1, minutes=1))
    auto.run(runs)
    runs, _ = auto.tick(TICK + timedelta(days=1, minutes=2))
    assert runs == {}
    # A manual re-run of an unchanged partition keeps its data versions: the models are not retrained.
    auto.run({"tiny|test": extraction})
    assert models.tick(TICK + timedelta(days=1, minutes=3))[0] == {}

    # A row added to val (a copy of a train video under a new id): only tiny|val runs, for that video.
    original = tiny_dataset.read_text()
    try:
        table = pd.read_csv(tiny_dataset)
        extra = table[table["split"] == "train"].iloc[[0]].assign(video_id="added_to_val", split="val")
        pd.concat([table, extra]).to_csv(tiny_dataset, index=False)
        auto.run(auto.tick(TICK + timedelta(days=2, minutes=1))[0])
        runs, changed = auto.tick(TICK + timedelta(days=2, minutes=2))
        assert runs == {"tiny|val": extraction}
        done = auto.run(runs)["tiny|val"]
        demux = _metadata(done, "demux")
        assert demux["processed"] == 1 and demux["skipped"] == len(table[table["split"] == "val"])
        assert _metadata(done, "frame_embeddings")["processed"] == 1
        assert models.tick(TICK + timedelta(days=2, minutes=3))[0] == retrain  # new data: retrain
    finally:
        tiny_dataset.write_text(original)

    # Why each run happened, as the UI's automation view shows it: the labelled condition that held.
    evaluation = next(r for r in changed.results if r.key == dg.AssetKey("manifest"))
    assert evaluation.condition.get_label() == "its manifest rows or source files changed"
    assert evaluation.true_subset.expensively_compute_partition_keys() == {"tiny|val"}
