"""Audio CNNs (Han, Choi, Xception) trained on log-mel segments; clip predictions averaged over segments
(UC), or one pass over the segments concatenated (UCcat, the authors' code) or a central crop (CC)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from instrec_pipeline.features.logmel import CHOI, HAN, MelParams
from instrec_pipeline.models import AUDIO_INPUTS, AUDIO_MODELS
from instrec_pipeline.training.data import (
    BlockStream,
    SplitData,
    central_crop,
    iter_rows,
    nbytes,
    uniform_crops,
)
from instrec_pipeline.training.loop import FitResult, TrainSettings, activate, fit, seed_everything

#: Which stored log-mel each model reads (Xception takes Choi's input, as in the paper).
MODEL_MEL: dict[str, MelParams] = {"han": HAN, "choi": CHOI, "choi_icmr": CHOI, "xception": CHOI}

#: The segment strategies each model can take, its default first.
#: UC: ``n_segments`` uniformly spread crops, each scored alone, predictions (or embeddings) averaged — the
#: paper's text. UCcat: the same segments concatenated in time into one input of the model's full length,
#: one forward pass per video — what the authors' code did (Veleslavia/ICMR2017 ``dataloaders/audio.py``
#: concatenates 10 × 2.912 s of audio into one 29.12-s log-mel), so it needs a model whose input spans the
#: segments (not Han's 1-s input). CC: one central crop of the model's full length.
#: ``choi_icmr`` flattens a fixed 1366-frame map, so it cannot score 137-frame UC segments alone.
STRATEGY_TITLES: dict[str, str] = {
    "UC": "UC segments (10 per video, predictions averaged)",
    "UCcat": "UC segments concatenated into one input (the authors' code)",
    "CC": "the central crop",
}
STRATEGIES: dict[str, tuple[str, ...]] = {
    "han": ("UC", "CC"),
    "choi": ("UC", "UCcat", "CC"),
    "choi_icmr": ("UCcat", "CC"),
    "xception": ("UC", "UCcat", "CC"),
}


@dataclass(frozen=True)
class AudioTrainConfig(TrainSettings):
    """Defaults are the paper's: 10 segments (UC, or UCcat for ``choi_icmr``), Adam, early stopping after
    10 epochs."""

    model: str = "choi"
    strategy: str = ""  # "" = the model's default (STRATEGIES[model][0]); one of UC, UCcat, CC
    n_segments: int = 10
    segment_frames: int = 0  # 0 = the model's own: Han 43, Choi 137 (2.912 s) for UC / UCcat, 1366 for CC
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 10

    def __post_init__(self) -> None:
        """Resolve the default strategy (so saved configs name it) and refuse a model/strategy pair that
        cannot work, before any data is read."""
        allowed = STRATEGIES.get(self.model)
        if allowed is None:
            raise ValueError(f"unknown audio model {self.model!r}; known: {sorted(STRATEGIES)}")
        if not self.strategy:
            object.__setattr__(self, "strategy", allowed[0])
        if self.strategy not in allowed:
            raise ValueError(f"audio model {self.model!r} takes strategies {allowed}, not {self.strategy!r}")

    @property
    def mel(self) -> MelParams:
        return MODEL_MEL[self.model]

    @property
    def frames(self) -> int:
        """Frames of one crop: a segment for UC / UCcat, the model's full input for CC."""
        if self.segment_frames:
            return self.segment_frames
        spec = AUDIO_INPUTS[self.model]
        if self.model == "han" or self.strategy == "CC":
            return spec.frames
        return spec.frames_for(spec.duration_s / self.n_segments)

    @property
    def input_frames(self) -> int:
        """Frames of one model input: UCcat's concatenation is cut or padded to the model's input length
        (10 × 137 = 1370 → 1366 for Choi's input); otherwise one crop."""
        return AUDIO_INPUTS[self.model].frames if self.strategy == "UCcat" else self.frames


def crops_of(logmel: np.ndarray, cfg: AudioTrainConfig) -> np.ndarray:
    """One video's model inputs, ``(n, n_mels, frames)``: UC segments, their concatenation (UCcat, n = 1)
    or the central crop (CC, n = 1)."""
    if cfg.strategy == "UC":
        return uniform_crops(logmel, cfg.n_segments, cfg.frames)
    if cfg.strategy == "UCcat":
        return concatenated_crops(logmel, cfg.n_segments, cfg.frames, cfg.input_frames)
    return central_crop(logmel, cfg.frames)


def concatenated_crops(logmel: np.ndarray, n_segments: int, frames: int, length: int) -> np.ndarray:
    """UCcat: the UC segments of ``(T, n_mels)`` side by side in time, cut or padded (with the video's
    floor, i.e. silence, as UC pads) to ``length`` → ``(1, n_mels, length)``.

    Cutting drops the last segment's final frames (1370 → 1366: 4 frames, 85 ms); the authors concatenated
    the audio before the STFT, which yields 1366 frames without a cut.
    """
    segments = uniform_crops(logmel, n_segments, frames)  # (n, n_mels, frames)
    joined = np.concatenate(list(segments), axis=1)[:, :length]  # (n_mels, ≤ length)
    if joined.shape[1] < length:
        floor = float(segments.min()) if segments.size else 0.0
        pad = np.full((joined.shape[0], length - joined.shape[1]), floor, joined.dtype)
        joined = np.concatenate([joined, pad], axis=1)
    return joined[None]


def build_model(cfg: AudioTrainConfig, n_classes: int) -> nn.Module:
    return AUDIO_MODELS[cfg.model](n_classes)


@torch.no_grad()
def _per_video_outputs(
    model: nn.Module, data: SplitData, cfg: AudioTrainConfig, device: torch.device, embed: bool
) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, mean over its crops)`` per video with audio, in eval mode; crops run in batches of 64 across
    videos while the log-mels are read block by block, so memory holds one batch, not the split."""
    model.eval()
    ids: list[str] = []
    counts: list[int] = []
    pending: list[np.ndarray] = []
    sums: list[np.ndarray] = []

    def run(x: np.ndarray) -> np.ndarray:
        xb = torch.from_numpy(x[:, None].astype(np.float32)).to(device)
        return (model.embed(xb) if embed else activate(model(xb), cfg.multilabel)).float().cpu().numpy()

    def drain(final: bool) -> Iterator[tuple[str, np.ndarray]]:
        nonlocal pending
        x = np.concatenate(pending) if pending else np.zeros((0,))
        while len(x) >= 64 or (final and len(x)):
            out = run(x[:64])
            x = x[64:]
            sums.append(out)
            done = np.concatenate(sums)
            while counts and len(done) >= counts[0]:
                yield ids.pop(0), done[: counts[0]].mean(0)
                done = done[counts.pop(0) :]
            sums[:] = [done] if len(done) else []
        pending = [x] if len(x) else []

    for vid, logmel in iter_rows(data.audio, data.video_ids):
        crops = crops_of(logmel, cfg)
        ids.append(vid)
        counts.append(len(crops))
        pending.append(crops)
        yield from drain(final=False)
    yield from drain(final=True)


def audio_probs(
    model: nn.Module, data: SplitData, cfg: AudioTrainConfig, n_classes: int, device: torch.device
) -> np.ndarray:
    """Clip-level probabilities (mean over segments); a video without audio gets the uniform prior."""
    probs = np.full((len(data.video_ids), n_classes), 1.0 / n_classes, np.float32)
    pos = {v: i for i, v in enumerate(data.video_ids)}
    for vid, p in _per_video_outputs(model, data, cfg, device, embed=False):
        probs[pos[vid]] = p
    return probs


def audio_embeddings(
    model: nn.Module, data: SplitData, cfg: AudioTrainConfig, device: torch.device
) -> dict[str, np.ndarray]:
    """The penultimate features per video (mean over its segments), in eval mode: the fusion's input."""
    return dict(_per_video_outputs(model, data, cfg, device, embed=True))


def train_audio(
    train: SplitData, val: SplitData, n_classes: int, cfg: AudioTrainConfig, device: torch.device
) -> tuple[nn.Module, FitResult]:
    """Segment-level training (each segment carries its video's label), early-stopped on val clips."""
    seed_everything(cfg.seed)
    ids = [v for v in train.video_ids if v in train.audio]
    if not ids:
        raise ValueError("no training video has audio: cannot train an audio model")
    y_ids = train.labels_for(ids)
    crop_bytes = max(cfg.n_segments * cfg.frames, cfg.input_frames) * cfg.mel.n_mels * 4
    stream = BlockStream(
        train.audio, ids, partial(crops_of, cfg=cfg),
        cost=lambda v: max(crop_bytes, nbytes(train.audio, v, cfg.mel.n_mels * 4)),
        budget=cfg.stream_budget_bytes, workers=cfg.workers(device),
    )  # fmt: skip
    model = build_model(cfg, n_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def samples(window: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """The window's crops ``(N, 1, n_mels, frames)`` and their videos' labels (kept if the split fits)."""
        if id(window) in kept:
            return kept[id(window)]
        x = np.concatenate([c for _, c in window])[:, None].astype(np.float32)
        y = y_ids[np.concatenate([np.full(len(c), p) for p, c in window])]
        if stream.fits:
            kept[id(window)] = (x, y)
        return x, y

    def batches(_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for window in stream.epoch(rng):
            yield from _shuffled(*samples(window))

    def _shuffled(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(len(x))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) > 1:  # batch norm needs two samples
                yield torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)

    def validate(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        return val.labels, audio_probs(m, val, cfg, n_classes, device)

    result = fit(model, optimizer, batches, validate, cfg, train.labels_for(ids), n_classes)
    stream.close()
    return model, result
