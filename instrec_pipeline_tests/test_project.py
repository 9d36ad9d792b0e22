"""The project's shape: Dagster lives in ``defs/`` only, the code location keeps its names, ``dg`` accepts it,
and the wheel carries the pipeline without its tests."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "instrec_pipeline"
#: What the stage packages must never import: the Dagster layer and the doors into it.
DAGSTER_LAYER = ("instrec_pipeline.defs", "instrec_pipeline.definitions", "instrec_pipeline.cli")
STAGES = ("datasets", "media", "features", "models", "training", "evaluation", "store")
DG = Path(sys.executable).parent / "dg"

ASSETS = {
    "manifest_file", "manifest", "raw_videos", "demux", "log_mel", "frame_embeddings", "audio_model_han",
    "audio_model_choi", "audio_model_choi_icmr", "audio_model_xception", "video_model", "fusion_model",
    "evaluation_report",
}  # fmt: skip
CHECKS = {
    "train_split_covers_every_class", "videos_accounted_for", "modalities_hold_the_same_videos",
    "frames_and_audio_agree", "log_mel_shapes_and_values", "embeddings_shapes_and_values",
    "embeddings_from_pretrained_weights",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count), made absolute."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _file(module: str) -> Path | None:
    """The project file behind ``instrec_pipeline.x.y`` (a module or a package), if there is one."""
    parts = module.split(".")
    for candidate in (REPO.joinpath(*parts).with_suffix(".py"), REPO.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def test_stage_packages_are_dagster_free_and_never_import_defs() -> None:
    """The stage packages and every project module they reach (settings, parallel, …) import no Dagster,
    and nothing of ``instrec_pipeline.defs`` / ``definitions``: they run and test without an orchestrator."""
    todo = [p for stage in STAGES for p in (PACKAGE / stage).rglob("*.py")]
    assert len(todo) > 30
    seen: set[Path] = set()
    problems = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            where = path.relative_to(REPO)
            if module.split(".")[0] == "dagster" or module.startswith("dagster_"):
                problems.append(f"{where}: imports {module}")
            if module.startswith(DAGSTER_LAYER):
                problems.append(f"{where}: imports {module}")
            if module.startswith("instrec_pipeline.") and (target := _file(module)):
                todo.append(target)
    assert not problems, "\n".join(sorted(problems))
    assert PACKAGE / "settings.py" in seen  # the closure did follow the stages' own imports


def test_the_code_location_keeps_its_names_kinds_and_descriptions() -> None:
    from instrec_pipeline.definitions import defs

    loaded = defs()
    graph = loaded.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    assert {k.name for k in graph.asset_check_keys} == CHECKS
    assert {j.name for j in loaded.jobs or []} == {"extraction_job"}
    assert not loaded.schedules  # declarative automation (defs/automation/declarative.py)
    sensors = {s.name for s in loaded.sensors or []}
    assert sensors == {"extraction_automation", "model_automation", "dead_run_sensor"}
    assert set(loaded.resources or {}) == {"store", "compute", "media", "extraction"}
    assert loaded.executor is not None and loaded.executor.name == "in_process"
    for node in graph.asset_nodes:
        assert node.kinds, f"{node.key.to_user_string()} has no kinds"
    for check in loaded.asset_checks or []:
        for spec in check.check_specs:
            assert spec.description, f"check {spec.name} has no description"


@pytest.mark.slow
def test_dg_accepts_the_project(new_dagster_home: Callable[[str], Path]) -> None:
    """``dg check defs`` (as CI runs it) and ``dg list defs`` load the defs folder through pyproject.toml's
    ``[tool.dg]``, with the same names as the Python entry point."""
    env = {**os.environ, "DAGSTER_HOME": str(new_dagster_home("dg_home"))}
    check = subprocess.run([str(DG), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run([str(DG), "list", "defs", "--json"], cwd=REPO, env=env, capture_output=True,
                            text=True)  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    found = json.loads(listed.stdout)
    assert {a["asset_key"] for a in found["assets"]} == ASSETS
    assert {c["name"] for c in found["asset_checks"]} == CHECKS
    assert {r["name"] for r in found["resources"]} == {"store", "compute", "media", "extraction"}


def test_the_wheel_carries_the_pipeline_without_its_tests() -> None:
    """Declared dependencies (dask optional), no tests in the wheel."""
    from setuptools import find_namespace_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = find_namespace_packages(where=str(REPO), **config["tool"]["setuptools"]["packages"]["find"])
    assert "instrec_pipeline.defs.assets" in found and "instrec_pipeline.datasets" in found
    assert not [p for p in found if p.startswith("instrec_pipeline_tests")]
    project = config["project"]
    names = {d.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
             for d in project["dependencies"]}  # fmt: skip
    assert {"pydantic", "pyyaml", "dagster", "dagster-dg-cli"} <= names
    assert "distributed" not in names
    assert any(d.startswith("distributed") for d in project["optional-dependencies"]["dask"])


def test_dagster_and_dg_load_the_same_code_location() -> None:
    """``dagster dev`` (pyproject's [tool.dagster] or workspace.yaml) and ``dg`` ([tool.dg]) agree."""
    import yaml

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    dg, dagster = config["dg"]["project"], config["dagster"]
    (workspace,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert dg["code_location_target_module"] == dagster["module_name"] == "instrec_pipeline.definitions"
    assert workspace["python_module"]["module_name"] == dagster["module_name"]
    location = workspace["python_module"]["location_name"]
    assert dg["code_location_name"] == dagster["code_location_name"] == location == "instrec_pipeline"
    assert dg["defs_module"] == "instrec_pipeline.defs" and config["dg"]["directory_type"] == "project"
