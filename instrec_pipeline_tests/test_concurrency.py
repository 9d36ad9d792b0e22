"""Two runs of one partition at once: the partition lock makes them take turns, never interleave."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from instrec_pipeline.features import quality
from instrec_pipeline.store import FeatureStore, PartitionBusy, RaggedArray
from instrec_pipeline_tests.test_extraction import REPO, _raw, _video

_WRITER = textwrap.dedent("""
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    import pandas as pd
    from instrec_pipeline.features.partition import demux_partition
    from instrec_pipeline.media.demux import DemuxParams
    from instrec_pipeline.store import FeatureStore

    raw = pd.read_csv(sys.argv[1], keep_default_na=False)
    store = FeatureStore(sys.argv[2])
    with store.lock("d", "train", holder=sys.argv[3], wait_s=float(sys.argv[4])):
        with ThreadPoolExecutor(2) as pool:
            s = demux_partition(raw, store.group("d", "train"), DemuxParams(resize=64, crop=48,
                                sample_rates=(8000, 11025)), pool, Path(sys.argv[2]) / "tmp" / "d" / "train")
    print(s.processed, s.skipped, len(s.failed))
""")


def _start(tmp_path: Path, table: Path, store: Path, name: str, wait_s: float) -> subprocess.Popen:
    cmd = [sys.executable, str(tmp_path / "writer.py"), str(table), str(store), name, str(wait_s)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def partition(tmp_path: Path) -> Path:
    sources = [_video(tmp_path / f"s{i}.mp4", 1 + i % 3) for i in range(3)]
    table = tmp_path / "raw.csv"
    _raw([(f"v{i:02d}", sources[i % 3], "") for i in range(24)]).to_csv(table, index=False)
    (tmp_path / "writer.py").write_text(_WRITER)
    return table


def test_two_runs_of_one_partition_take_turns(tmp_path: Path, partition: Path) -> None:
    """Five trials of two real processes started together: every video stored once in every modality."""
    for trial in range(5):
        store = tmp_path / f"store{trial}"
        runs = [_start(tmp_path, partition, store, f"run-{k}", wait_s=120) for k in "ab"]
        outs = [r.communicate(timeout=240) for r in runs]
        assert [r.returncode for r in runs] == [0, 0], [o[1][-500:] for o in outs]
        counts = sorted(tuple(map(int, o[0].split())) for o in outs)
        assert counts == [(0, 24, 0), (24, 0, 0)], counts  # one did the work, the other found it done
        group = FeatureStore(store).group("d", "train", mode="r")
        frames = RaggedArray.read(group, "frames")
        assert sorted(frames.video_ids) == [f"v{i:02d}" for i in range(24)]
        assert quality.same_videos(group, ["audio_8000", "audio_11025"]).passed


def test_a_second_writer_that_cannot_wait_fails_naming_the_first(tmp_path: Path, partition: Path) -> None:
    store = tmp_path / "store"
    holder = FeatureStore(store).lock("d", "train", holder="run 1234abcd")
    with holder:
        second = _start(tmp_path, partition, store, "run-b", wait_s=0)
        _, err = second.communicate(timeout=120)
    assert second.returncode != 0
    assert "PartitionBusy" in err and "run 1234abcd" in err and "d/train" in err
    assert not (store / "features" / "d" / "train.zarr").exists()  # it wrote nothing
    first, second_lock = (FeatureStore(store).lock("d", "train", holder=h) for h in ("run-c", "run-d"))
    with first, pytest.raises(PartitionBusy, match="run-c"), second_lock:
        pass


def test_the_lock_is_free_after_its_holder_is_killed(tmp_path: Path, partition: Path) -> None:
    store = tmp_path / "store"
    run = _start(tmp_path, partition, store, "run-killed", wait_s=0)
    lock_file = store / "features" / "d" / "train.lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock_file.exists() and lock_file.read_text()):
        time.sleep(0.05)
    run.kill()  # SIGKILL mid-partition
    run.wait()
    with FeatureStore(store).lock("d", "train", holder="next run"):  # free at once: no stale lock
        pass
    again = _start(tmp_path, partition, store, "run-after", wait_s=0)
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err[-500:]
    processed, skipped, failed = map(int, out.split())
    assert processed + skipped == 24 and failed == 0
    assert not [p for p in (store / "tmp" / "d" / "train").iterdir()]  # the killed run's spool is gone
