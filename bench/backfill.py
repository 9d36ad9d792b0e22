"""Backfill benchmark: every partition of a dataset at once, launched as the UI launches it (GraphQL
``launchPartitionBackfill`` against ``dagster dev`` with its daemon) on the project's default local
instance (SQLite, ``dagster.yaml``). Prints figures, asserts nothing.

    .venv/bin/python bench/backfill.py [--dataset demo] [--root DIR]

Two backfills, as a user runs them: the extraction assets over all of the dataset's dataset × split
partitions at once, then the per-dataset models and report. Then a re-run of the extraction backfill
over the unchanged partitions (the work a scheduled re-extraction does). Reported: wall time, runs,
failed runs, videos processed, and "database is locked" errors in the daemon's and the runs' logs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
from dagster import AssetKey, DagsterInstance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instrec_pipeline.cli import TRAINING  # noqa: E402
from instrec_pipeline.datasets.manifest import SPLITS  # noqa: E402
from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS  # noqa: E402
from instrec_pipeline_tests.dagster_ui import backfill, dagster_dev  # noqa: E402

LOCKED = "database is locked"


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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="instrec-backfill-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    root = Path(args.root) if args.root else work / "store"
    partitions = [f"{args.dataset}|{s}" for s in SPLITS]
    rows = []
    with dagster_dev(home, root) as url:
        for label, assets, keys in (
            ("extraction, all splits at once", EXTRACTION_ASSETS, partitions),
            ("models + report", TRAINING, [args.dataset]),
            ("extraction again, unchanged", EXTRACTION_ASSETS, partitions),
        ):
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
    print(f"\nBackfills of dataset {args.dataset!r} on the default instance ({home}):")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"'{LOCKED}' in the dagster dev (webserver + daemon) log: "
          f"{(home / 'dagster_dev.log').read_text(errors='replace').count(LOCKED)}")  # fmt: skip
    if not args.root:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
