"""Partition-level extraction: bad videos are reported and the rest completes; a SIGKILL mid-partition
loses nothing that was committed and leaves no partial record; a re-run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd

from instrec_pipeline.features.partition import demux_partition
from instrec_pipeline.media.demux import DemuxParams
from instrec_pipeline.store import FeatureStore, Frames, RaggedArray

PARAMS = DemuxParams(resize=64, crop=48, sample_rates=(8000,))
REPO = Path(__file__).resolve().parents[1]


def _video(path: Path, seconds: float, audio: bool = True, video: bool = True) -> Path:
    streams = []
    if video:
        streams.append(ffmpeg.input(f"testsrc2=size=96x64:rate=10:duration={seconds}", f="lavfi").video)
    if audio:
        streams.append(
            ffmpeg.input(f"sine=frequency=440:sample_rate=16000:duration={seconds}", f="lavfi").audio
        )
    ffmpeg.output(*streams, str(path), t=seconds).overwrite_output().run(quiet=True)
    return path


def _raw(rows: list[tuple[str, Path | str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "video_id": [r[0] for r in rows],
            "raw_path": [str(r[1]) for r in rows],
            "error": [r[2] for r in rows],
        }
    )


def test_bad_videos_are_reported_and_the_rest_completes(tmp_path: Path) -> None:
    good = _video(tmp_path / "good.mp4", 3)
    silent = _video(tmp_path / "silent.mp4", 2, audio=False)
    audio_only = _video(tmp_path / "audio.m4a", 2, video=False)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(5000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    raw = _raw(
        [
            ("good", good, ""),
            ("silent", silent, ""),
            ("audio", audio_only, ""),
            ("corrupt", corrupt, ""),
            ("truncated", truncated, ""),
            ("missing", tmp_path / "nope.mp4", ""),
            ("unfetched", "", "yt:abc: no network"),
        ]
    )
    group = FeatureStore(tmp_path / "store").group("d", "train")
    with ThreadPoolExecutor(2) as pool:
        summary = demux_partition(raw, group, PARAMS, pool, tmp_path / "spool")
    assert summary.processed == 3 and set(summary.failed) == {"corrupt", "truncated", "missing", "unfetched"}
    assert "no network" in summary.failed["unfetched"]
    assert all(reason for reason in summary.failed.values())
    frames = RaggedArray.read(group, "frames")
    audio = RaggedArray.read(group, "audio_8000")
    assert frames.lengths() == {"good": 3, "silent": 2, "audio": 0}
    assert audio.lengths()["silent"] == 0 and abs(audio.lengths()["good"] - 24000) < 400
    assert Frames.read(group).get("good").shape == (3, 48, 48, 3)
    assert not list((tmp_path / "spool").iterdir())  # scratch space is emptied
    with ThreadPoolExecutor(2) as pool:  # a re-run retries only the failures
        again = demux_partition(raw, group, PARAMS, pool, tmp_path / "spool")
    assert again.skipped == 3 and again.processed == 0


_RUNNER = textwrap.dedent("""
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    import pandas as pd
    from instrec_pipeline.store import FeatureStore
    from instrec_pipeline.media.demux import DemuxParams
    from instrec_pipeline.features.partition import demux_partition

    raw = pd.read_csv(sys.argv[1], keep_default_na=False)
    group = FeatureStore(sys.argv[2]).group("d", "train")
    with ThreadPoolExecutor(2) as pool:
        s = demux_partition(raw, group, DemuxParams(resize=64, crop=48, sample_rates=(8000,)), pool,
                            Path(sys.argv[3]))
    print(s.processed, s.skipped, len(s.failed))
""")


def test_sigkill_mid_partition_then_resume(tmp_path: Path) -> None:
    """1,000 videos in one partition: killed after a batched commit, resumed with nothing redone twice."""
    sources = [_video(tmp_path / f"v{i}.mp4", 1 + i % 3) for i in range(3)]
    rows = [(f"v{i:04d}", sources[i % 3], "") for i in range(1000)]
    table = tmp_path / "raw.csv"
    _raw(rows).to_csv(table, index=False)
    (tmp_path / "run.py").write_text(_RUNNER)
    store = tmp_path / "store"
    cmd = [sys.executable, str(tmp_path / "run.py"), str(table), str(store), str(tmp_path / "spool")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # The frames' commit record past one batch: some videos are committed, others in flight.
    record = store / "features" / "d" / "train.zarr" / "frames" / "zarr.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if _committed(record) >= 300:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    group = FeatureStore(store).group("d", "train")
    frames = RaggedArray.read(group, "frames")
    committed = len(frames)
    assert 300 <= committed < 1000
    for v, n in frames.lengths().items():
        assert frames.get(v).shape[0] == n and n in (1, 2, 3)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
    processed, skipped, failed = map(int, out)
    assert (processed, skipped, failed) == (1000 - committed, committed, 0)  # nothing recomputed
    frames = RaggedArray.read(FeatureStore(store).group("d", "train"), "frames")
    assert sorted(frames.video_ids) == [r[0] for r in rows]  # no duplicate, none missing
    assert frames.n_rows == sum(frames.lengths().values())
    first = {i: frames.get(rows[i][0]) for i in range(3)}
    for i, (vid, _, _) in enumerate(rows):  # every record whole and right
        assert frames.lengths()[vid] == 1 + i % 3
        if i % 97 == 0:
            np.testing.assert_array_equal(frames.get(vid), first[i % 3])
    audio = RaggedArray.read(FeatureStore(store).group("d", "train"), "audio_8000")
    assert sorted(audio.video_ids) == sorted(frames.video_ids)


def _committed(record: Path) -> int:
    import json

    try:
        return int(json.loads(record.read_text())["attributes"]["committed"]["videos"])
    except (OSError, ValueError, KeyError):
        return 0


def test_the_same_extraction_runs_on_a_dask_cluster(tmp_path: Path) -> None:
    """Per-video work goes to a Dask LocalCluster (worker processes, loopback) through the same code."""
    from distributed import LocalCluster, get_task_stream

    from instrec_pipeline.parallel import executor

    videos = [_video(tmp_path / f"v{i}.mp4", 2 + i) for i in range(3)]
    raw = _raw([(f"v{i}", p, "") for i, p in enumerate(videos)])
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        group = FeatureStore(tmp_path / "dask").group("d", "train")
        with (
            executor(dask_scheduler=cluster.scheduler_address) as pool,
            get_task_stream(pool._client) as tasks,  # noqa: SLF001 - proof that the workers did the work
        ):
            summary = demux_partition(raw, group, PARAMS, pool, tmp_path / "spool")
    assert summary.processed == 3 and not summary.failed
    assert len(tasks.data) == 3 and all(t["worker"].startswith("tcp://127.0.0.1:") for t in tasks.data)
    local = FeatureStore(tmp_path / "local").group("d", "train")
    with ThreadPoolExecutor(2) as pool:
        demux_partition(raw, local, PARAMS, pool, tmp_path / "spool")
    for v in ("v0", "v1", "v2"):
        np.testing.assert_array_equal(
            Frames.read(group).get(v), Frames.read(local).get(v)
        )


def test_fetch_partition_mixes_sources_and_reports_failures(tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from instrec_pipeline.media.fetch import FetchPolicy
    from instrec_pipeline.media.partition import fetch_partition

    media = tmp_path / "media"
    media.mkdir()
    _video(media / "local clip.mp4", 2)
    _video(media / "served.mp4", 2)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(media))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        table = pd.DataFrame({
            "video_id": ["local", "http", "http404", "youtube", "ftp", "gone"],
            "source": ["local clip.mp4", f"{url}/served.mp4", f"{url}/missing.mp4", "yt:dQw4w9WgXcQ",
                       "ftp://example.org/a.mp4", "not-here.mp4"],
        })  # fmt: skip
        with ThreadPoolExecutor(2) as pool:
            out, summary = fetch_partition(
                table, tmp_path / "raw", media, pool, retries=1, timeout=5,
                policy=FetchPolicy(allow_networks=("127.0.0.0/8",)),  # the test's server is on loopback
            )  # fmt: skip
    finally:
        server.shutdown()
    ok = out.set_index("video_id")
    assert summary.processed == 2 and set(summary.failed) == {"http404", "youtube", "ftp", "gone"}
    for vid in ("local", "http"):
        path = Path(ok.loc[vid, "raw_path"])
        assert path.is_file() and path.parent.parent == tmp_path / "raw"  # content-addressed
    assert all(ok.loc[v, "error"] for v in summary.failed)
