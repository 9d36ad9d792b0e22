"""Scale-out on Celery for real: a local redis-server as broker and result backend, a `dagster-celery` worker,
and one partition's extraction assets launched through the Dagster CLI with ``INSTREC_EXECUTOR=celery``, as a
deployment does it: same code, different environment."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import in_process_executor, multiprocess_executor

from instrec_pipeline.automation.executors import executor_from_env
from instrec_pipeline_tests.procs import REPO, free_port, start, stop, wait_for

ASSETS = ("manifest", "raw_videos", "demux", "log_mel")
PARTITION = "tiny|val"
BIN = Path(sys.executable).parent
#: What the real-broker test needs, checked before any fixture runs (no media made for nothing).
MISSING = [
    why
    for found, why in (
        (shutil.which("redis-server"), "no redis-server (`make broker`, or apt-get install redis-server)"),
        (importlib.util.find_spec("dagster_celery"), "no dagster-celery (pip install -e '.[celery]')"),
    )
    if not found
]


def test_executor_defaults_to_in_process() -> None:
    assert executor_from_env({}) is in_process_executor
    assert executor_from_env({"INSTREC_EXECUTOR": "in_process"}) is in_process_executor


def test_executor_multiprocess() -> None:
    assert executor_from_env({"INSTREC_EXECUTOR": "multiprocess"}) is multiprocess_executor


def test_unknown_executor_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'k8s' is not one of: in_process, multiprocess, celery"):
        executor_from_env({"INSTREC_EXECUTOR": "k8s"})


def test_celery_without_dagster_celery_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dagster_celery", None)  # as if not installed
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[celery\]'"):
        executor_from_env({"INSTREC_EXECUTOR": "celery"})


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port, nothing persisted."""
    redis = shutil.which("redis-server")
    assert redis, MISSING
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = folder / "redis.log"
    cmd = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(folder)]  # fmt: skip
    proc = start(cmd, log, os.environ)
    try:
        wait_for(lambda: _pong(port), proc, log, "redis-server", timeout=30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def celery_env(
    redis_url: str, new_dagster_home: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """What every process of the deployment shares: instance, store root, broker, the executor's name.
    Its own instance, so that the checks this run adds don't show up in the end-to-end tests' counts."""
    return {
        **os.environ,  # INSTREC_DATASETS: the `tiny` dataset
        "DAGSTER_HOME": str(new_dagster_home("celery_home")),
        "INSTREC_HOME": str(tmp_path_factory.mktemp("celery_store")),
        "INSTREC_EXECUTOR": "celery",
        "INSTREC_CELERY_BROKER": redis_url,
        "INSTREC_CELERY_BACKEND": redis_url,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "PATH": os.pathsep.join((str(BIN), os.environ.get("PATH", ""))),  # `celery` for dagster-celery
    }


@pytest.fixture(scope="module")
def celery_worker(celery_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """One `dagster-celery` worker (one task at a time) on the default queue, as on a cluster node."""
    home = Path(celery_env["DAGSTER_HOME"])
    config = home / "celery.yaml"
    broker = celery_env["INSTREC_CELERY_BROKER"]
    config.write_text(f"execution:\n  config:\n    broker: '{broker}'\n    backend: '{broker}'\n")
    name = f"instrec-test-{os.getpid()}"
    log = home / "celery_worker.log"
    cmd = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config),
           "-n", name, "--", "--concurrency", "1"]  # fmt: skip
    proc = start(cmd, log, celery_env)
    try:
        wait_for(lambda: " ready." in log.read_text(errors="replace"), proc, log, "celery worker", timeout=60)
        yield proc, f"{name}@{socket.gethostname()}", log
    finally:
        stop(proc)


@pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))
def test_assets_materialise_through_the_celery_worker(
    tiny_dataset: Path, celery_env: dict[str, str], celery_worker: tuple[subprocess.Popen, str, Path]
) -> None:
    from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

    worker, worker_name, worker_log = celery_worker
    home = Path(celery_env["DAGSTER_HOME"])
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "instrec_pipeline.definitions",
           "--select", ",".join(ASSETS), "--partition", PARTITION]  # fmt: skip
    start_time = time.time()
    launched = subprocess.run(cmd, cwd=REPO, env=celery_env, capture_output=True, text=True, timeout=240)
    print(f"{len(ASSETS)} assets of {PARTITION} through Celery: {time.time() - start_time:.0f} s")
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]

    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == PARTITION
        for asset in ASSETS:
            assert set(instance.get_materialized_partitions(AssetKey(asset))) == {PARTITION}, asset
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
        by_type = lambda t: [e for e in events if e.event_type == t]  # noqa: E731

        # Every step (assets and their checks) went through the broker and was executed by *our* worker:
        # the worker itself writes "Executing steps … in celery worker" with its Celery name.
        steps = {e.step_key for e in by_type(DagsterEventType.STEP_SUCCESS)}
        assert set(ASSETS) <= steps
        submitted = {e.step_key for e in by_type(DagsterEventType.ENGINE_EVENT)
                     if e.message.startswith("Submitting celery task")}  # fmt: skip
        executed = {e.step_key for e in by_type(DagsterEventType.ENGINE_EVENT)
                    if e.message.endswith("in celery worker")
                    and e.engine_event_data.metadata["Celery worker"].value == worker_name}  # fmt: skip
        assert submitted == executed == steps

        # ...in the worker's processes, not in the CLI that launched the run.
        (run_start,) = by_type(DagsterEventType.RUN_START)
        for event in by_type(DagsterEventType.STEP_START):
            assert event.pid != run_start.pid, event.step_key
            assert os.getpgid(event.pid) == worker.pid, event.step_key  # the worker's process group
    assert worker_log.read_text(errors="replace").count("succeeded in") == len(steps)
