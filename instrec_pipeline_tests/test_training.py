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
    cfg = VideoTrainConfig(k=4, lr=0.01, max_epochs=6, patience=3, seed=5)
    runs = [train_video(train, val, 3, cfg, torch.device("cpu")) for _ in range(2)]
    p = [video_probs(m, val, norm, 3, torch.device("cpu")) for m, norm, _ in runs]
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
