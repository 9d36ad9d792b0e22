"""Training inputs (UC/CC crops, frame sampling) and reproducibility of the loop."""

from __future__ import annotations

import numpy as np
import torch

from instrec_pipeline.training.data import SplitData, central_crop, sample_frames, uniform_crops
from instrec_pipeline.training.video import VideoTrainConfig, train_video, video_probs


def test_uniform_crops_cover_the_video_and_pad_short_ones() -> None:
    mel = np.arange(1000 * 2, dtype=np.float32).reshape(1000, 2)
    crops = uniform_crops(mel, 10, 137)
    assert crops.shape == (10, 2, 137)
    assert crops[0, 0, 0] == mel[0, 0] and crops[-1, 0, -1] == mel[-1, 0]
    short = uniform_crops(mel[:50], 10, 137)
    assert short.shape == (10, 2, 137) and short[0, 0, -1] == mel[:50].min()
    cc = central_crop(mel, 100)
    assert cc.shape == (1, 2, 100) and cc[0, 0, 0] == mel[450, 0]


def test_sample_frames() -> None:
    rng = np.random.default_rng(0)
    assert len(set(sample_frames(30, 20, rng))) == 20  # without replacement when enough frames
    assert sample_frames(5, 8, rng).max() < 5
    assert sample_frames(10, 3, None).tolist() == [0, 4, 9]  # uniform at evaluation


def _toy(n_videos: int, seed: int) -> SplitData:
    rng = np.random.default_rng(seed)
    labels = np.arange(n_videos) % 3
    frames = {
        f"v{i}": (rng.normal(size=(5, 2048)) + 2 * np.eye(3)[labels[i]].repeat(683)[:2048]).astype(np.float32)
        for i in range(n_videos)
    }
    return SplitData([f"v{i}" for i in range(n_videos)], labels, frames=frames)


def test_video_training_is_reproducible_and_learns() -> None:
    train, val = _toy(12, 0), _toy(6, 1)
    cfg = VideoTrainConfig(k=4, lr=0.01, lr_search=(), max_epochs=6, patience=3, seed=5)
    runs = [train_video(train, val, 3, cfg, torch.device("cpu")) for _ in range(2)]
    p = [video_probs(m, val, norm, 3, torch.device("cpu")) for m, norm, _, _ in runs]
    np.testing.assert_array_equal(p[0], p[1])
    assert runs[0][2].history == runs[1][2].history
    assert (p[0].argmax(1) == val.labels).mean() == 1.0


def test_audio_training_is_reproducible_and_missing_audio_is_chance() -> None:
    from instrec_pipeline.training.audio import AudioTrainConfig, audio_probs, train_audio

    rng = np.random.default_rng(0)

    def split(n: int) -> SplitData:
        labels = np.arange(n) % 2
        ramp = 3 * np.linspace(-1, 1, 128)
        audio = {
            f"v{i}": (rng.normal(size=(120, 128)) + labels[i] * ramp).astype(np.float32) for i in range(n)
        }
        return SplitData([f"v{i}" for i in range(n)], labels, audio=audio)

    train, val = split(8), split(4)
    cfg = AudioTrainConfig(model="han", n_segments=3, batch_size=8, max_epochs=3, patience=2, seed=1)
    runs = [train_audio(train, val, 2, cfg, torch.device("cpu")) for _ in range(2)]
    assert runs[0][1].history == runs[1][1].history
    del val.audio["v0"]  # a video without audio gets the uniform prior, not a made-up score
    probs = audio_probs(runs[0][0], val, cfg, 2, torch.device("cpu"))
    np.testing.assert_allclose(probs[0], [0.5, 0.5])


def test_each_audio_model_reads_the_log_mel_it_was_designed_for() -> None:
    from instrec_pipeline.models import AUDIO_INPUTS
    from instrec_pipeline.training.audio import MODEL_MEL

    for name, spec in AUDIO_INPUTS.items():
        mel = MODEL_MEL[name]
        assert (mel.n_mels, mel.sample_rate, mel.n_fft, mel.hop) == (
            spec.n_mels,
            spec.sample_rate,
            spec.n_fft,
            spec.hop,
        )


def test_standardiser_keeps_dimensions_constant_in_train_bounded() -> None:
    """A dead Inception unit (constant on the train frames) must not explode on a test frame."""
    from instrec_pipeline.training.video import Standardizer

    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    train[:, 3] = 0.0  # constant on train
    norm = Standardizer.fit([train[:20], train[20:]])  # in blocks, as streamed
    test = rng.normal(size=(5, 8)).astype(np.float32)
    test[:, 3] = 0.5  # the unit fires on a test frame
    z = norm(test)
    assert np.abs(z).max() < 20  # was 5e5 with a bare std + 1e-6
    np.testing.assert_allclose(norm(train)[:, 0].std(), 1.0, rtol=1e-3)  # live dimensions: unit variance


def _stored(tmp_path, split: SplitData) -> SplitData:
    """The same split, its frames written to a real store and read back on demand."""
    from instrec_pipeline.store import FeatureStore, RaggedArray
    from instrec_pipeline.training.data import StoredRows

    group = FeatureStore(tmp_path).group("toy", str(len(split.video_ids)))
    with RaggedArray.open(group, "embeddings", (2048,), "float32", {}) as arr:
        arr.append(split.frames.items())
    rows = StoredRows(RaggedArray.read(group, "embeddings"), set(split.video_ids))
    return SplitData(split.video_ids, split.labels, frames=rows)


def test_stored_split_trains_exactly_as_in_memory(tmp_path) -> None:
    """Same seed, same metrics: a split read from the store (within the budget) is sampled identically."""
    train, val = _toy(12, 0), _toy(6, 1)
    cfg = VideoTrainConfig(k=4, lr=0.01, lr_search=(), max_epochs=4, patience=3, seed=5)
    cpu = torch.device("cpu")
    m1, n1, f1, _ = train_video(train, val, 3, cfg, cpu)
    m2, n2, f2, _ = train_video(_stored(tmp_path, train), _stored(tmp_path, val), 3, cfg, cpu)
    assert f1.history == f2.history
    np.testing.assert_array_equal(video_probs(m1, val, n1, 3, cpu), video_probs(m2, val, n2, 3, cpu))


def test_block_stream_over_budget_visits_every_video_once_in_seeded_windows(tmp_path, monkeypatch) -> None:
    """Past its budget the stream reads blocks in worker processes, in a seeded order, window by window."""
    from instrec_pipeline.training import data as data_mod
    from instrec_pipeline.training.data import BlockStream, nbytes

    monkeypatch.setattr(data_mod, "BLOCK_BYTES", 2 * 5 * 2048 * 4)  # two videos a block
    split = _stored(tmp_path, _toy(20, 0))
    cost = lambda v: nbytes(split.frames, v, 2048 * 4)  # noqa: E731
    block = 2 * 5 * 2048 * 4
    stream = BlockStream(split.frames, split.video_ids, np.asarray, cost, budget=3 * block, workers=2)
    assert not stream.fits and len(stream.blocks) == 10 and stream.window == 3
    try:
        epochs = []
        for seed in (0, 0, 1):
            windows = list(stream.epoch(np.random.default_rng(seed)))
            assert [len(w) for w in windows] == [6, 6, 6, 2]  # bounded: three blocks at a time
            order = [p for w in windows for p, _ in w]
            assert sorted(order) == list(range(20))
            for w in windows:
                for p, x in w:
                    np.testing.assert_array_equal(x, split.frames[split.video_ids[p]])
            epochs.append(order)
    finally:
        stream.close()
    assert epochs[0] == epochs[1] and epochs[0] != epochs[2] and epochs[0] != sorted(epochs[0])


def test_video_training_streams_past_its_budget_and_learns(tmp_path) -> None:
    train, val = _stored(tmp_path, _toy(24, 0)), _stored(tmp_path, _toy(6, 1))
    cfg = VideoTrainConfig(
        k=4, lr=0.01, lr_search=(), max_epochs=6, patience=3, seed=5, stream_budget_bytes=1, loader_workers=0
    )
    model, norm, _, _ = train_video(train, val, 3, cfg, torch.device("cpu"))
    assert (video_probs(model, val, norm, 3, torch.device("cpu")).argmax(1) == val.labels).mean() == 1.0


# --------------------------------------------------------------------------------------------------------
# Fine-tuning: random horizontal flips of training frames, never at evaluation
# --------------------------------------------------------------------------------------------------------


def _left_bright(n: int, size: int = 8) -> np.ndarray:
    """``n`` frames, bright on the left half and dark on the right: a mirror image is told at a glance."""
    frames = np.full((n, size, size, 3), 20, np.uint8)
    frames[:, :, : size // 2] = 200
    return frames


def _mirrored(frames: np.ndarray, width_axis: int = 2) -> np.ndarray:
    """Which frames are mirrored (bright side on the right), for NHWC (axis 2) or NCHW (axis 3) arrays."""
    half = frames.shape[width_axis] // 2
    left = np.take(frames, range(half), axis=width_axis).astype(np.float64)
    right = np.take(frames, range(half, 2 * half), axis=width_axis).astype(np.float64)
    other = tuple(a for a in range(1, frames.ndim))
    return left.mean(other) < right.mean(other)


def test_training_batches_flip_some_frames_seeded_and_evaluation_frames_never() -> None:
    from instrec_pipeline.training.finetune import evaluation_frames, training_batch

    videos = [_left_bright(10) for _ in range(4)]

    def batch(flip_seed: int | None) -> np.ndarray:
        flips = None if flip_seed is None else np.random.default_rng(flip_seed)
        return training_batch(iter(videos), 5, np.random.default_rng(0), flips)

    x = batch(1)
    flipped = _mirrored(x)
    assert x.shape == (20, 8, 8, 3) and 0 < flipped.sum() < len(x)  # some, not all
    np.testing.assert_array_equal(x[flipped], _left_bright(int(flipped.sum()))[:, :, ::-1])  # exact mirror
    np.testing.assert_array_equal(x[~flipped], _left_bright(int((~flipped).sum())))  # others untouched
    np.testing.assert_array_equal(_mirrored(batch(1)), flipped)  # seeded: the same flips again
    assert not np.array_equal(_mirrored(batch(2)), flipped)  # another seed, other flips
    assert not _mirrored(batch(None)).any()  # flips off
    assert not _mirrored(np.concatenate(videos)).any()  # the stored frames are never modified
    for n in (1, 3, 10):
        for k in (1, 4, 20):
            assert not _mirrored(evaluation_frames(_left_bright(n), k)).any()


def test_finetune_flips_training_inputs_only(tmp_path, monkeypatch) -> None:
    """End to end through ``finetune_inception`` with a recording stand-in for Inception: the frames the
    backbone sees in training mode are mirrored at random (seeded), those it sees in eval mode never."""
    import pandas as pd
    from torch import nn

    from instrec_pipeline.features.visual import EMBEDDING_DIM
    from instrec_pipeline.store import FeatureStore, FrameCodec, Frames, RaggedArray
    from instrec_pipeline.store.layout import Layout
    from instrec_pipeline.training import finetune as ft
    from instrec_pipeline.training.loop import TrainSettings

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.Mixed_7c = nn.Linear(3, EMBEDDING_DIM)  # a "trainable block" so the optimiser has work
            self.seen: list[tuple[bool, np.ndarray]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # normalised NCHW: mirroring survives it
            self.seen.append((self.training, x.detach().cpu().numpy()))
            return self.Mixed_7c(x.mean((2, 3)))

    layout = Layout(tmp_path)
    for split, n in (("train", 6), ("val", 3)):
        ids = [f"{split}{i}" for i in range(n)]
        path = layout.table("toy", split, "manifest")
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = [("a", "b")[i % 2] for i in range(n)]
        pd.DataFrame({"video_id": ids, "label": labels}).to_csv(path, index=False)
        group = FeatureStore(tmp_path).group("toy", split)
        frames = Frames.open(group, 1.0, 8, 8, FrameCodec("raw"))
        with frames.array:
            for v in ids:
                frames.append_stream(v, [_left_bright(7)])
        if split == "train":
            RaggedArray.open(group, "embeddings", (EMBEDDING_DIM,), "float32", {"weights": "random"})

    def run(flip: bool) -> tuple[list[bool], list[bool]]:
        recorder = Recorder()
        monkeypatch.setattr(ft, "load_inception", lambda *a, **kw: (recorder, None))
        ft.finetune_inception(
            layout, "toy", ["a", "b"], TrainSettings(max_epochs=2, patience=5, seed=3),
            k=4, lr=0.01, batch_size=8, device=torch.device("cpu"), flip=flip,
        )  # fmt: skip
        train = [m for training, x in recorder.seen if training for m in _mirrored(x, 3)]
        evaluation = [m for training, x in recorder.seen if not training for m in _mirrored(x, 3)]
        assert len(train) == 2 * 6 * 4 and len(evaluation) == 2 * 3 * 4  # epochs × videos × k
        return train, evaluation

    train, evaluation = run(flip=True)
    assert 0 < sum(train) < len(train) and not any(evaluation)
    assert run(flip=True)[0] == train  # the run's seed fixes the flips
    assert not any(run(flip=False)[0])


def test_cpu_bf16_training_learns_and_records_its_precision(tmp_path, monkeypatch) -> None:
    """Issue #12: ``precision="bf16"`` trains under CPU bf16 autocast (validation too) and still learns the
    toy task; the checkpoint records what the setting resolved to. ``fp32`` never enables autocast, so its
    arithmetic is exactly the float32 loop's."""
    from dataclasses import replace

    import instrec_pipeline.training.video as video_mod
    from instrec_pipeline.store.layout import Layout
    from instrec_pipeline.training.runs import _fit_and_save_video, load_video

    train, val = _toy(12, 0), _toy(6, 1)
    cpu = torch.device("cpu")
    base = VideoTrainConfig(k=4, lr=0.01, lr_search=(), max_epochs=6, patience=3, seed=5)
    autocast_seen: dict[str, set[bool]] = {}
    build = video_mod.build_video

    def spy_build(cfg: VideoTrainConfig, n_classes: int) -> torch.nn.Module:
        model = build(cfg, n_classes)
        seen = autocast_seen.setdefault(cfg.precision, set())
        model.register_forward_hook(lambda *_: seen.add(torch.is_autocast_enabled("cpu")))
        return model

    monkeypatch.setattr(video_mod, "build_video", spy_build)
    layout = Layout(tmp_path)
    metas = {
        p: _fit_and_save_video(layout, "toy", f"{p}/", ["a", "b", "c"], replace(base, precision=p),
                               train, val, cpu, "embeddings", {})  # fmt: skip
        for p in ("bf16", "fp32")
    }
    assert autocast_seen == {"bf16": {True}, "fp32": {False}}  # training and validation forwards alike
    assert metas["bf16"]["precision"] == "bf16" and metas["bf16"]["config"]["precision"] == "bf16"
    assert metas["fp32"]["precision"] == "fp32"
    assert metas["bf16"]["history"] != metas["fp32"]["history"]  # bf16 really ran
    model, norm, meta = load_video(layout, "toy", cpu, tag="bf16/")
    assert meta["precision"] == "bf16"
    assert (video_probs(model, val, norm, 3, cpu).argmax(1) == val.labels).mean() == 1.0


def test_fit_counts_the_seconds_its_steps_wait_for_input() -> None:
    """Issue #12: what the loop waited for its batches is measured apart from the steps (an input-bound
    run shows it in its metadata), and only that: a fast input counts next to nothing."""
    import time

    from instrec_pipeline.training.loop import TrainSettings, fit

    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)

    def run(delay: float) -> tuple[float, float]:
        def batches(_: int):  # noqa: ANN202
            for _ in range(5):
                time.sleep(delay)
                yield x, y

        model = torch.nn.Linear(4, 2)
        res = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), batches,
                  lambda m: (y.numpy(), torch.softmax(m(x), 1).detach().numpy()),
                  TrainSettings(max_epochs=3, patience=5, precision="fp32"), y.numpy(), 2)  # fmt: skip
        return res.input_seconds, res.seconds

    slow, total = run(0.02)
    assert 15 * 0.02 <= slow <= total
    fast, _ = run(0.0)
    assert fast < 0.02
