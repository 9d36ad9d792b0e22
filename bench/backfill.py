"""Backfill benchmark: every partition of a dataset at once, launched as the UI launches it (GraphQL
``launchPartitionBackfill`` against ``dagster dev`` with its daemon) on the project's default local
instance (SQLite, ``dagster.yaml``). Prints figures, asserts nothing.

    .venv/bin/python bench/backfill.py [--dataset demo] [--root DIR] [--no-models] [--minutes 4]

Two backfills, as a user runs them: the extraction assets over all of the dataset's dataset × split
partitions at once, then the per-dataset models and report. Then a re-run of the extraction backfill
over the unchanged partitions (what a manual re-run costs). Reported: wall time, runs, failed runs,
videos processed, and "database is locked" errors in the daemon's and the runs' logs.

Then the declarative automation, live: the sensor ``extraction_automation`` switched on through GraphQL
with the manifests observed every minute (``INSTREC_REEXTRACT_CRON='* * * * *'``) for ``--minutes``:
which runs it launched on each tick, what they cost, and the tick's reason as the daemon recorded it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from dagster import AssetKey, DagsterInstance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instrec_pipeline.cli import TRAINING  # noqa: E402
from instrec_pipeline.datasets.manifest import SPLITS  # noqa: E402
from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS  # noqa: E402
from instrec_pipeline_tests.dagster_ui import backfill, dagster_dev, graphql  # noqa: E402

LOCKED = "database is locked"
START_SENSOR = """mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""


def automation(url: str, home: Path, minutes: float) -> pd.DataFrame:
    """Switch ``extraction_automation`` on, wait, and list the runs it launched: what, how long."""
    selector = {"repositoryLocationName": "instrec_pipeline", "repositoryName": "__repository__",
                "sensorName": "extraction_automation"}  # fmt: skip
    began = time.time()
    started = graphql(url, START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started
    time.sleep(minutes * 60)
    instance = DagsterInstance.from_config(str(home))
    rows = []
    for record in instance.get_run_records():
        run = record.dagster_run
        if (record.create_timestamp.timestamp() < began or "dagster/sensor_name" not in run.tags
                or run.tags["dagster/sensor_name"] != "extraction_automation"):  # fmt: skip
            continue
        end, start = record.end_time or time.time(), record.start_time or time.time()
        rows.append({
            "created": record.create_timestamp.strftime("%H:%M:%S"),
            "partition": run.tags.get("dagster/partition", ""),
            "assets": ",".join(sorted(k.to_user_string() for k in run.asset_selection or [])),
            "status": run.status.value, "seconds": round(end - start, 1),
            "with_launch_s": round(end - record.create_timestamp.timestamp(), 1),  # + process start-up
            "videos_demuxed": _processed(instance, {run.run_id}),
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values(["created", "partition"]) if rows else pd.DataFrame()


def _processed(instance: DagsterInstance, run_ids: set[str]) -> int:
    """Videos demuxed by these runs (the ``processed`` metadata of ``demux``)."""
    records = instance.fetch_materializations(AssetKey("demux"), limit=1000).records
    return sum(
        int(r.asset_materialization.metadata["processed"].value) for r in records if r.run_id in run_ids
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--root", help="store root (default: a fresh temporary one)")
    parser.add_argument("--no-models", action="store_true", help="skip the models + report backfill")
    parser.add_argument("--minutes", type=float, default=4, help="how long the automation runs (0: skip it)")
    args = parser.parse_args()
    os.environ.update({"INSTREC_REEXTRACT_CRON": "* * * * *", "INSTREC_REEXTRACT_DATASETS": args.dataset})
    work = Path(tempfile.mkdtemp(prefix="instrec-backfill-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    root = Path(args.root) if args.root else work / "store"
    partitions = [f"{args.dataset}|{s}" for s in SPLITS]
    rows = []
    with dagster_dev(home, root) as url:
        phases = [("extraction, all splits at once", EXTRACTION_ASSETS, partitions),
                  ("models + report", TRAINING, [args.dataset]),
                  ("extraction again, unchanged", EXTRACTION_ASSETS, partitions)]  # fmt: skip
        for label, assets, keys in phases[::2] if args.no_models else phases:
            backfill_id, status, seconds = backfill(url, assets, keys, timeout=3600)
            instance = DagsterInstance.from_config(str(home))
            runs = [r for r in instance.get_runs() if r.tags.get("dagster/backfill") == backfill_id]
            logs = [e.message or "" for r in runs for e in instance.all_logs(r.run_id)]
            rows.append({
                "backfill": label, "assets": len(assets), "partitions": len(keys), "status": status,
                "seconds": round(seconds), "runs": len(runs), "failed": sum(not r.is_success for r in runs),
                "videos_demuxed": _processed(instance, {r.run_id for r in runs}),
                "locked_errors": sum(LOCKED in m for m in logs),
            })  # fmt: skip
        ticks = automation(url, home, args.minutes) if args.minutes else None
    print(f"\nBackfills of dataset {args.dataset!r} on the default instance ({home}):")
    print(pd.DataFrame(rows).to_string(index=False))
    if ticks is not None:
        print(f"\nRuns launched by extraction_automation in {args.minutes:g} min (observed each minute):")
        print(ticks.to_string(index=False) if len(ticks) else "none")
    print(f"'{LOCKED}' in the dagster dev (webserver + daemon) log: "
          f"{(home / 'dagster_dev.log').read_text(errors='replace').count(LOCKED)}")  # fmt: skip
    if not args.root:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
