"""A run killed mid-step in the ``gpu`` pool: the sensor marks it failed and frees its slot, so the next
GPU run completes instead of waiting "blocked by limit for pool gpu" forever."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from instrec_pipeline.defs.automation.runs import reap_dead_runs
from instrec_pipeline.store import FeatureStore, FrameCodec, Frames, open_audio

REPO = Path(__file__).resolve().parents[1]


def _materialize(env: dict[str, str], partition: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "instrec_pipeline.definitions",
           "--select", "log_mel", "--partition", partition]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_a_killed_gpu_run_frees_its_slot(tmp_path: Path) -> None:
    home, root = tmp_path / "dagster_home", tmp_path / "store"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # the shipped pools and run monitoring
    store = FeatureStore(root)
    for split in ("train", "val"):  # one demuxed video: a little audio to turn into log-mels
        group = store.group("demo", split)
        for rate in (12000, 22050):
            with open_audio(group, rate) as audio:
                audio.append([("v1", np.sin(np.arange(rate * 2) / 9).astype(np.float32))])
        frames = Frames.open(group, 1.0, 256, 224, FrameCodec())
        with frames.array:
            frames.append_stream("v1", [np.zeros((2, 224, 224, 3), np.uint8)])
    env = {**os.environ, "DAGSTER_HOME": str(home), "INSTREC_HOME": str(root), "PYTHONPATH": str(REPO)}
    instance = DagsterInstance.from_config(str(home))
    with store.lock("demo", "train", holder="the test"):  # the step waits on it, holding the gpu slot
        first = _materialize(env, "demo|train")
        deadline = time.time() + 180
        while time.time() < deadline and first.poll() is None:
            runs = instance.get_runs()
            if runs and instance.get_records_for_run(
                runs[0].run_id, of_type=DagsterEventType.STEP_START, limit=1
            ).records:
                break
            time.sleep(0.5)
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(1)
        first.send_signal(signal.SIGKILL)
        first.wait()
    (killed,) = instance.get_runs()
    assert killed.status == DagsterRunStatus.STARTED  # Dagster alone never learns that it died
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots  # … and keeps its slot
    assert reap_dead_runs(instance, grace_s=0) == [killed.run_id]
    assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
    assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    second = _materialize(env, "demo|val")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert instance.get_runs(limit=1)[0].status == DagsterRunStatus.SUCCESS
