"""Log-mel against librosa on real rendered instrument audio; Inception v3 embeddings."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import librosa
import numpy as np
import pandas as pd
import pytest
import torch

from instrec_pipeline.features.logmel import CHOI, HAN, log_mel
from instrec_pipeline.features.partition import batch_blocks, embedding_params, embedding_partition
from instrec_pipeline.features.visual import EMBEDDING_DIM, FrameEmbedder, load_inception
from instrec_pipeline.media.demux import DemuxParams, demux
from instrec_pipeline.store import FeatureStore, RaggedArray

#: The largest difference to librosa we accept, in dB (measured: ~2e-4 dB, float32 rounding).
LIBROSA_TOLERANCE_DB = 0.01


@pytest.fixture(scope="module")
def rendered(tiny_dataset: Path) -> dict[int, np.ndarray]:
    """Real fluidsynth-rendered audio, demuxed by the pipeline at both models' rates."""
    row = pd.read_csv(tiny_dataset).iloc[0]
    return demux(tiny_dataset.parent / row["source"], DemuxParams(sample_rates=(12000, 22050))).audio


@pytest.mark.parametrize("mel", [CHOI, HAN], ids=["choi", "han"])
def test_log_mel_matches_librosa(rendered: dict[int, np.ndarray], mel) -> None:  # noqa: ANN001
    y = rendered[mel.sample_rate]
    ours = log_mel(y, mel)
    power = librosa.feature.melspectrogram(
        y=y, sr=mel.sample_rate, n_fft=mel.n_fft, hop_length=mel.hop, n_mels=mel.n_mels
    )
    ref = librosa.power_to_db(power, ref=1.0, top_db=mel.top_db).T
    assert ours.shape == ref.shape == (1 + len(y) // mel.hop, mel.n_mels)
    assert np.abs(ours - ref).max() <= LIBROSA_TOLERANCE_DB
    assert ours.max() - ours.min() <= mel.top_db + 1e-3  # the 80 dB range


def test_log_mel_of_missing_audio_is_empty() -> None:
    assert log_mel(np.zeros(0, np.float32), CHOI).shape == (0, 96)


@pytest.fixture(scope="module")
def embedder() -> FrameEmbedder:
    return FrameEmbedder("random", "cpu", batch_size=4)


@pytest.mark.parametrize("readers", [1, 3])
def test_embeddings_are_2048_d_batched_across_videos_and_resumable(
    embedder: FrameEmbedder, tmp_path: Path, readers: int
) -> None:
    """Each video's embeddings are its frames' (batches span videos; with several reader threads, blocks
    read out of order still come back in order), a video done before is kept."""
    rng = np.random.default_rng(0)
    videos = {
        v: rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8)
        for v, n in [("a", 1), ("b", 6), ("empty", 0), ("c", 2), ("d", 3), ("e", 5), ("f", 7)]
    }
    group = FeatureStore(tmp_path).group("d", "train")
    with RaggedArray.open(group, "frames", (96, 96, 3), "uint8", {}) as frames:
        frames.append(list(videos.items()))
    # "b" was done by an earlier run: it is kept, never recomputed or duplicated.
    done = embedder.embed(videos["b"])
    params = embedding_params(embedder.weights, frames, embedder.precision)
    with RaggedArray.open(group, "embeddings", (EMBEDDING_DIM,), "float32", params) as done_before:
        done_before.append([("b", done)])
    target, summary = embedding_partition(group, embedder, readers=readers)
    assert (summary.processed, summary.skipped, summary.rows) == (6, 1, 18)  # 5 batches of 4 or fewer
    assert target.video_ids == ["b", "a", "empty", "c", "d", "e", "f"]
    assert target.lengths() == {v: len(f) for v, f in videos.items()}
    assert not embedder.model.training
    for v, f in videos.items():
        if len(f):
            np.testing.assert_allclose(target.get(v), embedder.embed(f), rtol=1e-3, atol=1e-2)
    assert embedder.weights.kind == "random"


def test_random_features_are_informative(embedder: FrameEmbedder) -> None:
    """Batch-norm calibration keeps random features from collapsing: red and blue frames differ."""
    red = np.zeros((2, 96, 96, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((2, 96, 96, 3), np.uint8)
    blue[..., 2] = 220
    e = embedder.embed(np.concatenate([red, blue]))
    within = np.linalg.norm(e[0] - e[1])
    between = np.linalg.norm(e[0] - e[2])
    assert between > 10 * (within + 1e-6) and np.abs(e).max() < 1e6


def test_local_weights_file_is_loaded_and_recorded(tmp_path: Path) -> None:
    model, _ = load_inception("random", seed=3)
    path = tmp_path / "inception.pt"
    torch.save(model.state_dict(), path)
    loaded, weights = load_inception(str(path))
    assert weights.kind == "file" and weights.source == str(path)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights"):
        load_inception(str(tmp_path / "nope.pt"))


#: What may stand in for torch's float32 Inception: bf16 autocast, and OpenVINO (the ``auto`` runtime on CPU)
#: in float32 or bf16.
_FAST_FORWARDS = [("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]


@pytest.mark.parametrize(("runtime", "precision"), _FAST_FORWARDS, ids=["-".join(f) for f in _FAST_FORWARDS])
def test_fast_embeddings_stay_within_cosine_0999_of_float32(
    embedder: FrameEmbedder, tmp_path: Path, runtime: str, precision: str
) -> None:
    """Every frame of a real video, demuxed by the pipeline, keeps its direction to within cosine 0.999
    under each precision/runtime ``auto`` may pick; the runtime is recorded with the embeddings."""
    import ffmpeg

    from instrec_pipeline.media.demux import DemuxParams, demux

    video = tmp_path / "v.mp4"
    ffmpeg.input("mandelbrot=size=320x240:rate=10", f="lavfi", t=6).output(str(video)).overwrite_output().run(
        quiet=True
    )
    frames = demux(video, DemuxParams(sample_rates=(16000,))).frames
    fast = FrameEmbedder("random", "cpu", batch_size=4, precision=precision, runtime=runtime)
    a, b = embedder.embed(frames), fast.embed(frames)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert len(frames) == 6 and cos.min() >= 0.999, cos
    assert (fast.precision, fast.runtime) == (precision, runtime) and embedder.precision == "fp32"
    frames_source = SimpleNamespace(params_digest="frames")  # all embedding_params reads of its source
    params = embedding_params(fast.weights, frames_source, fast.precision, fast.runtime)  # type: ignore[arg-type]
    assert params.get("runtime") == (None if runtime == "torch" else runtime)  # torch: the digest of before


def test_openvino_streams_keep_each_batch_in_order(tmp_path: Path) -> None:
    """Batches streamed through OpenVINO's streams (pieces of several in flight at once) come back one per
    batch, in order, empty ones included, each as that batch embedded alone; a consumer that stops early
    leaves the requests usable."""
    rng = np.random.default_rng(0)
    sizes = [5, 0, 8, 1, 8, 3]
    batches = [rng.integers(0, 255, (n, 75, 75, 3)).astype(np.uint8) for n in sizes]
    fast = FrameEmbedder("random", "cpu", batch_size=8, precision="fp32", runtime="openvino")
    assert len(fast._openvino.requests) >= 1  # type: ignore[union-attr]
    streamed = list(fast.embed_batches(iter(batches)))
    assert [len(e) for e in streamed] == sizes
    for batch, got in zip(batches, streamed, strict=True):
        if len(batch):
            np.testing.assert_allclose(got, fast.embed(batch), rtol=1e-4, atol=1e-5)
    early = fast.embed_batches(iter(batches[2:]))
    next(early)
    early.close()  # pieces still in flight are waited for, not abandoned
    np.testing.assert_allclose(fast.embed(batches[4]), streamed[4], rtol=1e-4, atol=1e-5)


def test_runs_starting_together_convert_to_openvino_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill's runs start together: one converts the network to OpenVINO's IR, the others wait for its
    file instead of each spending the ~30 s (the conversion is slowed here so that they would overlap)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import openvino as ov

    from instrec_pipeline.features import visual

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tiny, real_convert, calls = torch.nn.Conv2d(3, 4, 3), ov.convert_model, []

    def slow_convert(model: torch.nn.Module, example_input: torch.Tensor) -> ov.Model:
        calls.append(model)
        time.sleep(0.5)
        return real_convert(model, example_input=example_input)

    monkeypatch.setattr(ov, "convert_model", slow_convert)
    weights = visual.LoadedWeights("random", "random init", "concurrent-test")
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: visual._openvino_ir(tiny, weights), range(4)))
    (xml,) = paths
    assert len(calls) == 1 and xml.exists() and xml.with_suffix(".bin").exists()


def test_openvino_embedders_freed_in_any_order_leave_signals_deliverable(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack and restores the previous one when
    it goes: with a plugin per embedder, freeing them out of order left an unmapped stack, and the next
    signal — here a child's SIGCHLD, in training a DataLoader worker's — killed the process (SIGSEGV, no
    traceback). Run in a child process, which that crash would kill."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import gc, os, signal, torch
        from instrec_pipeline.features.visual import LoadedWeights, _OpenVINOInception
        tiny, weights = torch.nn.Conv2d(3, 4, 3), LoadedWeights("random", "random init", "altstack-test")
        a, b = _OpenVINOInception(tiny, weights, "fp32"), _OpenVINOInception(tiny, weights, "bf16")
        del a; gc.collect(); del b; gc.collect()  # first in, first out
        got = []
        signal.signal(signal.SIGCHLD, lambda *_: got.append(1))
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("signals handled:", len(got))
    """)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "signals handled: 1" in done.stdout


def test_frame_geometry_is_recorded_and_a_change_re_extracts_frames(tmp_path: Path) -> None:
    """``extraction.geometry`` reaches the stored frames' parameters: another geometry gives another params
    digest, so the frames are re-extracted (and embeddings, whose params name that digest, follow)."""
    from concurrent.futures import ThreadPoolExecutor

    import ffmpeg

    from instrec_pipeline.defs.resources import ExtractionResource
    from instrec_pipeline.features.partition import demux_partition
    from instrec_pipeline.store import Frames

    video = tmp_path / "v.mkv"
    ffmpeg.input("testsrc2=size=160x90:rate=10:duration=2", f="lavfi").output(
        str(video), vcodec="ffv1"
    ).overwrite_output().run(quiet=True)
    raw = pd.DataFrame({"video_id": ["v"], "raw_path": [str(video)], "error": [""]})
    group = FeatureStore(tmp_path / "store").group("d", "train")
    seen: dict[str, tuple[str, np.ndarray]] = {}
    with ThreadPoolExecutor(1) as pool:
        for geometry in ("squash", "squash", "shorter_side"):
            params = ExtractionResource(resize=64, crop=48, geometry=geometry).demux_params(())
            assert params.geometry == geometry
            summary = demux_partition(raw, group, params, pool, tmp_path / "spool")
            frames = Frames.read(group)
            assert frames.array.params["geometry"] == geometry
            if geometry in seen:
                assert (summary.processed, summary.skipped) == (0, 1)  # same parameters: kept
            else:
                assert (summary.processed, summary.skipped) == (1, 0)  # new parameters: re-extracted
            seen[geometry] = (frames.array.params_digest, frames.get("v"))
    (squash_digest, squashed), (shorter_digest, cropped) = seen["squash"], seen["shorter_side"]
    assert squash_digest != shorter_digest
    assert squashed.shape == cropped.shape == (2, 48, 48, 3)
    assert np.abs(squashed.astype(int) - cropped.astype(int)).mean() > 5  # really other pictures


def test_embedding_batches_are_full_across_video_boundaries(tmp_path: Path) -> None:
    """Videos are cut where a batch fills, so every inference batch but the last is full whatever the
    lengths (a video's remainder used to make a short batch of its own), and the spans cover each video
    once, in order, its last one flagged."""
    lengths = {"a": 60, "b": 60, "empty": 0, "c": 5, "d": 70}
    source = RaggedArray.open(FeatureStore(tmp_path).group("d", "t"), "x", (1,), "float32", {})
    source.append((vid, np.zeros((n, 1), np.float32)) for vid, n in lengths.items())
    blocks = batch_blocks(source, list(lengths), 32)
    sizes = [sum(b - a for _, a, b, _ in block) for block in blocks]
    assert sizes == [32] * 6 + [195 - 6 * 32]
    spans = [span for block in blocks for span in block]
    for vid in lengths:
        mine = [(a, b, last) for v, a, b, last in spans if v == vid]
        start, stop = source.span(vid)
        assert mine[0][0] == start and mine[-1][1] == stop and mine[-1][2]
        assert all(b == a2 and not last for (_, b, last), (a2, _, _) in zip(mine, mine[1:], strict=False))
    assert [v for v, _, _, last in spans if last] == list(lengths)
