"""Shared fixtures. A small user dataset, ``tiny``, is declared before the Dagster definitions are
imported (partitions are fixed at import), so the end-to-end test materialises real partitions."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CLASSES = ("flute", "guitar", "trumpet")
#: ``tiny_tags``: the same videos, multi-label: each instrument plus its family where it has one.
TAGS = {"flute": "flute;wind", "guitar": "guitar", "trumpet": "trumpet;wind"}
TAGS_CLASSES = ("flute", "guitar", "trumpet", "wind")
_TINY_DIR = Path(tempfile.mkdtemp(prefix="instrec-tiny-"))
(_TINY_DIR / "datasets.yaml").write_text(
    f"""datasets:
  tiny:
    manifest: media/manifest.csv
    classes: [{", ".join(TINY_CLASSES)}]
    training:
      audio: {{max_epochs: 8, patience: 3}}
      video: {{max_epochs: 15, patience: 4, k: 4, lr_search: [0.001, 0.01]}}
      fusion: {{k: 4, n: 64, hidden: 128, batch_size: 4, dropout: 0.5, max_epochs: 15, patience: 4, folds: 3}}
  tiny_tags:
    manifest: media/tags.csv
    classes: [{", ".join(TAGS_CLASSES)}]
    multilabel: true
    seeds: 2
    training:  # short: the test checks the path, tiny checks the learning
      audio: {{max_epochs: 3, patience: 2}}
      video: {{lr: 0.01, max_epochs: 6, patience: 3, k: 4}}
      fusion: {{k: 4, n: 64, hidden: 128, batch_size: 4, dropout: 0.5, max_epochs: 6, patience: 3,
                inputs: holdout}}
"""
)
os.environ["INSTREC_DATASETS"] = str(_TINY_DIR / "datasets.yaml")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_dataset() -> Path:
    """3 instruments × 8 short real videos (4 train / 2 val / 2 test each), made once per session; also
    the manifest of ``tiny_tags``, their multi-label twin."""
    from instrec_pipeline.datasets.demo import DemoSpec, generate_demo

    spec = DemoSpec(classes=TINY_CLASSES, videos_per_class=8, min_seconds=3.0, max_seconds=4.0, seed=7)
    manifest = generate_demo(_TINY_DIR / "media", spec)
    table = pd.read_csv(manifest, dtype=str)
    table.assign(label=table["label"].map(TAGS)).to_csv(manifest.with_name("tags.csv"), index=False)
    return manifest


@pytest.fixture(scope="session")
def new_dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Makes a persistent instance (SQLite) with the project's dagster.yaml, as `make setup` makes one."""

    def make(name: str) -> Path:
        home = tmp_path_factory.mktemp(name)
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        return home

    return make


@pytest.fixture(scope="session")
def dagster_home(new_dagster_home: Callable[[str], Path]) -> Path:
    """The session's instance, shared by the end-to-end and web-UI tests."""
    return new_dagster_home("dagster_home")


@pytest.fixture(scope="session")
def materialised(tiny_dataset: Path, dagster_home: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Every asset of every ``tiny`` partition, materialised once per session with Dagster."""
    from dagster import DagsterInstance

    from instrec_pipeline.cli import materialize_dataset
    from instrec_pipeline.store.layout import Layout

    root = tmp_path_factory.mktemp("store")
    instance = DagsterInstance.from_config(str(dagster_home))
    materialize_dataset("tiny", root, instance)
    return Layout(root), instance


#: Modules that start servers, workers or whole Dagster runs, or extract a thousand videos: `make test`
#: runs them, `make test-fast` (the inner loop) does not.
SLOW_MODULES = {
    "test_celery", "test_web_ui", "test_pipeline_e2e", "test_concurrency", "test_run_slots",
    "test_multilabel", "test_automation",
}  # fmt: skip
SLOW_TESTS = {
    "test_sigkill_mid_partition_then_resume", "test_the_same_extraction_runs_on_a_dask_cluster",
    "test_every_readme_command_runs_as_written",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
