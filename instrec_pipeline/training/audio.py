"""Audio CNNs (Han, Choi, Xception) trained on log-mel segments; clip predictions averaged over segments."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from instrec_pipeline.features.logmel import CHOI, HAN, MelParams
from instrec_pipeline.models import AUDIO_INPUTS, AUDIO_MODELS
from instrec_pipeline.training.data import SplitData, central_crop, uniform_crops
from instrec_pipeline.training.loop import FitResult, TrainSettings, activate, fit, seed_everything

#: Which stored log-mel each model reads (Xception takes Choi's input, as in the paper).
MODEL_MEL: dict[str, MelParams] = {"han": HAN, "choi": CHOI, "xception": CHOI}


@dataclass(frozen=True)
class AudioTrainConfig(TrainSettings):
    """Defaults are the paper's: UC with 10 segments, Adam, early stopping after 10 epochs."""

    model: str = "choi"
    strategy: str = "UC"  # UC: uniform segments, predictions averaged; CC: one central crop
    n_segments: int = 10
    segment_frames: int = 0  # 0 = the model's own: Han 43, Choi/Xception 137 (2.912 s) for UC, 1366 for CC
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 10

    @property
    def mel(self) -> MelParams:
        return MODEL_MEL[self.model]

    @property
    def frames(self) -> int:
        if self.segment_frames:
            return self.segment_frames
        spec = AUDIO_INPUTS[self.model]
        if self.model == "han" or self.strategy == "CC":
            return spec.frames
        return spec.frames_for(spec.duration_s / self.n_segments)


def segments(data: SplitData, cfg: AudioTrainConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All crops of the videos that have audio: ``(N, 1, n_mels, frames)``, owner index, owner ids."""
    ids = [v for v in data.video_ids if v in data.audio]
    crops = [
        uniform_crops(data.audio[v], cfg.n_segments, cfg.frames) if cfg.strategy == "UC"
        else central_crop(data.audio[v], cfg.frames)
        for v in ids
    ]  # fmt: skip
    if not crops:
        return np.zeros((0, 1, cfg.mel.n_mels, cfg.frames), np.float32), np.zeros(0, np.int64), []
    owners = np.concatenate([np.full(len(c), i) for i, c in enumerate(crops)])
    return np.concatenate(crops)[:, None].astype(np.float32), owners, ids


def build_model(cfg: AudioTrainConfig, n_classes: int) -> nn.Module:
    return AUDIO_MODELS[cfg.model](n_classes)


@torch.no_grad()
def _segment_outputs(
    model: nn.Module, x: np.ndarray, device: torch.device, embed: bool, multilabel: bool = False
) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, len(x), 64):
        xb = torch.from_numpy(x[i : i + 64]).to(device)
        out = model.embed(xb) if embed else activate(model(xb), multilabel)
        outs.append(out.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _per_video_mean(values: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, values.shape[1]), np.float32)
    np.add.at(out, owners, values)
    return out / np.bincount(owners, minlength=n)[:, None].clip(min=1)


def audio_probs(
    model: nn.Module, data: SplitData, cfg: AudioTrainConfig, n_classes: int, device: torch.device
) -> np.ndarray:
    """Clip-level probabilities (mean over segments); a video without audio gets the uniform prior."""
    x, owners, ids = segments(data, cfg)
    probs = np.full((len(data.video_ids), n_classes), 1.0 / n_classes, np.float32)
    if ids:
        outputs = _segment_outputs(model, x, device, embed=False, multilabel=cfg.multilabel)
        per_video = _per_video_mean(outputs, owners, len(ids))
        pos = {v: i for i, v in enumerate(data.video_ids)}
        probs[[pos[v] for v in ids]] = per_video
    return probs


def audio_embeddings(
    model: nn.Module, data: SplitData, cfg: AudioTrainConfig, device: torch.device
) -> dict[str, np.ndarray]:
    """The penultimate features per video (mean over its segments), in eval mode: the fusion's input."""
    x, owners, ids = segments(data, cfg)
    if not ids:
        return {}
    per_video = _per_video_mean(_segment_outputs(model, x, device, embed=True), owners, len(ids))
    return dict(zip(ids, per_video, strict=True))


def train_audio(
    train: SplitData, val: SplitData, n_classes: int, cfg: AudioTrainConfig, device: torch.device
) -> tuple[nn.Module, FitResult]:
    """Segment-level training (each segment carries its video's label), early-stopped on val clips."""
    seed_everything(cfg.seed)
    x, owners, ids = segments(train, cfg)
    if not ids:
        raise ValueError("no training video has audio: cannot train an audio model")
    y = train.labels_for(ids)[owners]
    model = build_model(cfg, n_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)

    def batches(_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(len(x))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) > 1:  # batch norm needs two samples
                yield torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)

    def validate(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        return val.labels, audio_probs(m, val, cfg, n_classes, device)

    result = fit(model, optimizer, batches, validate, cfg, train.labels_for(ids), n_classes)
    return model, result
