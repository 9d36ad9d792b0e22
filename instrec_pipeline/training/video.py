"""The multi-frame video model: a frame classifier over stored Inception embeddings.

Trained frame-level with the video's label, ``k`` frames drawn at random per video per epoch; evaluated
by averaging the frame probabilities of a video. Embeddings are standardised with the train split's
statistics (stored in the checkpoint), which also keeps randomly initialised Inception features usable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from instrec_pipeline.features.visual import EMBEDDING_DIM
from instrec_pipeline.models import FrameClassifier
from instrec_pipeline.training.data import (
    BLOCK_BYTES,
    BlockStream,
    SplitData,
    iter_rows,
    nbytes,
    sample_frames,
)
from instrec_pipeline.training.loop import (
    FitResult,
    TrainSettings,
    activate,
    fit,
    seed_everything,
    val_metric,
)


@dataclass(frozen=True)
class VideoTrainConfig(TrainSettings):
    """Defaults are the paper's: k = 20 frames, SGD lr 1e-4, momentum 0.9, halved every 5 epochs."""

    k: int = 20
    hidden: int = 1024
    dropout: float = 0.5
    lr: float = 1e-4
    #: Rates tried on val, best kept (``lr`` then records the choice): the paper's 1e-4 is its rate for
    #: fine-tuning a whole pretrained net, far too slow for a freshly initialised head. Empty: use ``lr``.
    lr_search: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    momentum: float = 0.9
    halve_every: int = 5
    batch_size: int = 64
    #: Fine-tune Inception v3's last blocks on the frames first (GPU advised), then train on its embeddings.
    finetune: bool = False
    finetune_lr: float = 1e-4  # the paper's SGD rate for its fine-tuned video nets
    finetune_epochs: int = 10
    finetune_k: int = 8  # frames per video per fine-tuning epoch


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, blocks: Iterable[np.ndarray]) -> Standardizer:
        """Per-dimension mean and std of the train frames, the std floored at a tenth of its mean.

        The frames arrive in blocks (never the whole split in memory), merged with Chan et al.'s pairwise
        update of count, mean and squared deviations (exactly ``x.mean(0)``, ``x.std(0)`` for one block).

        Inception features include dimensions that are constant on a train set (dead ReLUs); dividing by
        their ~0 std turned a small deviation on a test frame into values of 10^6 that swamped the video
        model's embedding and hence the fusion's input. The floor keeps such dimensions at the scale of
        the others.
        """
        n, mean, m2 = 0, np.zeros(0), np.zeros(0)
        for block in blocks:
            x = np.asarray(block, np.float64)
            nb, mb = len(x), x.mean(0)
            m2b = ((x - mb) ** 2).sum(0)
            if n == 0:
                n, mean, m2 = nb, mb, m2b
                continue
            delta = mb - mean
            total = n + nb
            mean = mean + delta * nb / total
            m2 = m2 + m2b + delta**2 * n * nb / total
            n = total
        std = np.sqrt(m2 / n)
        return cls(mean.astype(np.float32), np.maximum(std, 0.1 * std.mean() + 1e-6).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}


def _blocks_of(rows: Mapping[str, np.ndarray], ids: list[str], max_bytes: int) -> Iterator[np.ndarray]:
    """Consecutive videos' frames concatenated, at most ``max_bytes`` a block (one when the split fits)."""
    block: list[np.ndarray] = []
    held = 0
    for _, f in iter_rows(rows, ids):
        if block and held + f.nbytes > max_bytes:
            yield np.concatenate(block)
            block, held = [], 0
        block.append(f)
        held += f.nbytes
    if block:
        yield np.concatenate(block)


def build_video(cfg: VideoTrainConfig, n_classes: int) -> FrameClassifier:
    return FrameClassifier(n_classes, hidden_dims=(cfg.hidden,), dropout=cfg.dropout)


@torch.no_grad()
def video_probs(
    model: FrameClassifier,
    data: SplitData,
    norm: Standardizer,
    n_classes: int,
    device: torch.device,
    multilabel: bool = False,
) -> np.ndarray:
    """Mean of frame probabilities per video; a video without frames gets the uniform prior."""
    model.eval()
    probs = np.full((len(data.video_ids), n_classes), 1.0 / n_classes, np.float32)
    pos = {v: i for i, v in enumerate(data.video_ids)}
    for v, frames in iter_rows(data.frames, data.video_ids):
        x = torch.from_numpy(norm(frames)).to(device)
        probs[pos[v]] = activate(model(x), multilabel).mean(0).cpu().numpy()
    return probs


class FrameFeatures(Mapping[str, np.ndarray]):
    """The video model's penultimate features per frame (eval mode), the fusion's video input, computed
    when a video is looked up: memory holds one video's features, not the split's (61k videos × hundreds
    of frames × 1024 floats would not fit)."""

    def __init__(
        self, model: FrameClassifier, data: SplitData, norm: Standardizer, device: torch.device
    ) -> None:
        self.model, self.rows, self.norm, self.device = model, data.frames, norm, device

    @torch.no_grad()
    def __getitem__(self, video_id: str) -> np.ndarray:
        self.model.eval()
        x = torch.from_numpy(self.norm(self.rows[video_id])).to(self.device)
        return self.model.embed(x).float().cpu().numpy()  # float32 even under bf16 autocast

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def frame_embeddings(
    model: FrameClassifier, data: SplitData, norm: Standardizer, device: torch.device
) -> FrameFeatures:
    """The video model's per-frame features of a split, computed on demand (see :class:`FrameFeatures`)."""
    return FrameFeatures(model, data, norm, device)


def train_video(
    train: SplitData, val: SplitData, n_classes: int, cfg: VideoTrainConfig, device: torch.device
) -> tuple[FrameClassifier, Standardizer, FitResult, VideoTrainConfig]:
    """The head at each rate of ``cfg.lr_search`` (or at ``cfg.lr``), the best on val kept; the config
    returned records the chosen rate, its fit's ``tuning`` the val score of every rate tried."""
    if not cfg.lr_search:
        return (*_train_video(train, val, n_classes, cfg, device), cfg)
    metric = val_metric(cfg.multilabel)
    best, tried = None, {}
    for lr in cfg.lr_search:
        model, norm, fit = _train_video(train, val, n_classes, replace(cfg, lr=lr), device)
        at = fit.best_epoch
        key = (fit.history[metric][at], -fit.history["val_loss"][at])
        tried[f"{lr:g}"] = key[0]
        if best is None or key > best[0]:
            best = (key, model, norm, fit, replace(cfg, lr=lr))
    assert best is not None
    _, model, norm, fit, chosen = best
    fit.tuning = {f"lr={k}": v for k, v in tried.items()}
    return model, norm, fit, chosen


def _train_video(
    train: SplitData, val: SplitData, n_classes: int, cfg: VideoTrainConfig, device: torch.device
) -> tuple[FrameClassifier, Standardizer, FitResult]:
    seed_everything(cfg.seed)
    ids = [v for v in train.video_ids if v in train.frames]
    if not ids:
        raise ValueError("no training video has frames: cannot train the video model")
    norm = Standardizer.fit(_blocks_of(train.frames, ids, BLOCK_BYTES))
    row_bytes = EMBEDDING_DIM * 4
    stream = BlockStream(
        train.frames, ids, norm, lambda v: nbytes(train.frames, v, row_bytes),
        cfg.stream_budget_bytes, cfg.workers(device),
    )  # fmt: skip
    y_all = train.labels_for(ids)
    model = build_video(cfg, n_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.halve_every, gamma=0.5)
    rng = np.random.default_rng(cfg.seed)

    def batches(_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for window in stream.epoch(rng):
            x = np.concatenate([f[sample_frames(len(f), cfg.k, rng)] for _, f in window])
            y = np.repeat(y_all[[p for p, _ in window]], cfg.k, axis=0)
            order = rng.permutation(len(x))
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                yield torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)

    def validate(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        return val.labels, video_probs(m, val, norm, n_classes, device, cfg.multilabel)

    result = fit(model, optimizer, batches, validate, cfg, y_all, n_classes, scheduler=scheduler)
    stream.close()
    return model, norm, result
