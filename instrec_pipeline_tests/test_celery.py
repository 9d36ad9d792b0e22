"""Scale-out on Celery for real: a local redis-server as broker and result backend, two `dagster-celery`
workers (a CPU and a GPU queue), and one partition's extraction assets launched through the Dagster CLI with
``INSTREC_EXECUTOR=celery``, as a deployment does it: same code, different environment."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import in_process_executor, multiprocess_executor

from instrec_pipeline.defs.executors import GPU_QUEUE, executor_from_env
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
    Its own instance, so that the checks this run adds don't show up in the end-to-end tests' counts;
    created here once, as two workers creating one SQLite schema at the same time corrupt it."""
    from dagster import DagsterInstance

    home = new_dagster_home("celery_home")
    DagsterInstance.from_config(str(home)).dispose()
    return {
        **os.environ,  # INSTREC_DATASETS: the `tiny` dataset
        "DAGSTER_HOME": str(home),
        "INSTREC_HOME": str(tmp_path_factory.mktemp("celery_store")),
        "INSTREC_EXECUTOR": "celery",
        "INSTREC_CELERY_BROKER": redis_url,
        "INSTREC_CELERY_BACKEND": redis_url,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "PATH": os.pathsep.join((str(BIN), os.environ.get("PATH", ""))),  # `celery` for dagster-celery
    }


@dataclass
class Worker:
    proc: subprocess.Popen
    name: str  # the Celery node name, as the worker reports it
    log: Path


@pytest.fixture(scope="module")
def celery_workers(celery_env: dict[str, str]) -> Iterator[dict[str, Worker]]:
    """Two `dagster-celery` workers (one task at a time each) as on two cluster nodes: a CPU node on Dagster's
    default queue, a GPU node on the `gpu` queue."""
    home = Path(celery_env["DAGSTER_HOME"])
    config = home / "celery.yaml"
    broker = celery_env["INSTREC_CELERY_BROKER"]
    config.write_text(f"execution:\n  config:\n    broker: '{broker}'\n    backend: '{broker}'\n")
    workers: dict[str, Worker] = {}
    try:
        for role, queue in (("cpu", "dagster"), ("gpu", GPU_QUEUE)):
            name, log = f"instrec-{role}-{os.getpid()}", home / f"celery_{role}.log"
            cmd = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                   "-y", str(config), "-q", queue, "-n", name, "--", "--concurrency", "1"]  # fmt: skip
            workers[role] = Worker(start(cmd, log, celery_env), f"{name}@{socket.gethostname()}", log)
        for role, w in workers.items():
            ready = lambda w=w: " ready." in w.log.read_text(errors="replace")  # noqa: E731
            wait_for(ready, w.proc, w.log, f"celery worker ({role})", timeout=60)
        yield workers
    finally:
        for w in workers.values():
            stop(w.proc)


@pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))
def test_assets_materialise_through_celery_workers(
    tiny_dataset: Path, celery_env: dict[str, str], celery_workers: dict[str, Worker]
) -> None:
    from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

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
    steps = {e.step_key for e in by_type(DagsterEventType.STEP_SUCCESS)}  # the assets and their checks
    assert set(ASSETS) <= steps
    role = {step: "gpu" if step == "log_mel" else "cpu" for step in steps}

    # Every step went through the broker, to its queue: the GPU stage to `gpu`, the rest to `dagster`.
    engine = by_type(DagsterEventType.ENGINE_EVENT)
    queues = {e.step_key: e.message.split('to queue "')[1].rstrip('".') for e in engine
              if e.message.startswith("Submitting celery task")}  # fmt: skip
    assert queues == {step: GPU_QUEUE if r == "gpu" else "dagster" for step, r in role.items()}
    # ...and was executed by the worker on that queue, which itself logs "Executing steps … in celery worker".
    executed_by = {e.step_key: e.engine_event_data.metadata["Celery worker"].value
                   for e in engine if e.message.endswith("in celery worker")}  # fmt: skip
    assert executed_by == {step: celery_workers[r].name for step, r in role.items()}
    # ...in that worker's processes, not in the CLI that launched the run.
    (run_start,) = by_type(DagsterEventType.RUN_START)
    for event in by_type(DagsterEventType.STEP_START):
        assert event.pid != run_start.pid, event.step_key
        assert os.getpgid(event.pid) == celery_workers[role[event.step_key]].proc.pid, event.step_key
    for r, worker in celery_workers.items():
        done = worker.log.read_text(errors="replace").count("succeeded in")
        assert done == sum(x == r for x in role.values()), r


def test_gpu_stages_and_only_they_go_to_the_gpu_queue() -> None:
    from instrec_pipeline.definitions import defs

    for assets_def in defs().assets:
        gpu = assets_def.op.pool == "gpu"
        assert (assets_def.op.tags.get("dagster-celery/queue") == GPU_QUEUE) == gpu, assets_def.key
