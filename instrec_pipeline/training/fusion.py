"""Late fusion of the trained unimodal nets' penultimate features on (k + 1, n) inputs.

The unimodal nets are frozen and run in eval mode to produce the inputs (the 2017 code extracted with
dropout and batch norm in training mode). A missing modality is zeros; during training one modality is
dropped at random (``modality_dropout``) so the fused net learns to work with either alone.

Leak-free inputs (``inputs``): nets fitted on the train split produce near-perfect features for that
split, so a fusion trained on them learns to trust inputs that are weaker at test (the paper's, and the
in-sample, variant). ``oof`` cross-fits: K pairs of unimodal nets, each trained on K − 1 folds of train,
give every train video features from nets that never saw it, and at inference the fusion averages its
scores over the K pairs (their feature spaces are the ones it was trained on). ``holdout`` is the
cheaper variant: one pair trained on the rest of train, the fusion on the held-out slice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from instrec_pipeline.models import LateFusionNet
from instrec_pipeline.training.data import sample_frames
from instrec_pipeline.training.loop import FitResult, TrainSettings, activate, fit, seed_everything

#: Videos per evaluation batch.
EVAL_BATCH = 256


@dataclass(frozen=True)
class FusionTrainConfig(TrainSettings):
    """The paper's fusion: two FC 1024 on (k + 1, n); Adam (the paper names no optimiser for it)."""

    audio_model: str = "choi"  # which trained audio net provides the audio vector
    k: int = 20
    n: int = 1024
    hidden: int = 1024
    lr: float = 1e-3
    batch_size: int = 32
    modality_dropout: float = 0.2
    dropout: float = 0.0
    #: Where the train split's fusion inputs come from: ``oof`` (K-fold cross-fitting), ``holdout`` (a
    #: held-out slice of train) or ``insample`` (the nets fitted on all of train, as in the paper).
    inputs: str = "oof"
    folds: int = 5
    holdout: float = 0.2

    def __post_init__(self) -> None:
        if self.inputs not in ("oof", "holdout", "insample"):
            raise ValueError(f"fusion inputs must be oof, holdout or insample, got {self.inputs!r}")
        if self.folds < 2 or not 0.0 < self.holdout < 1.0:
            raise ValueError(f"need folds >= 2 and 0 < holdout < 1, got {self.folds}, {self.holdout}")


@dataclass
class FusionInputs:
    """Per split: ids, labels, per-video frame features (n_i, dv) and audio vector (da,), when present."""

    video_ids: list[str]
    labels: np.ndarray
    video: Mapping[str, np.ndarray]  # computed on access for stored splits (bounded memory)
    audio: Mapping[str, np.ndarray]


def stack_batch(
    inp: FusionInputs,
    idx: np.ndarray,
    k: int,
    dv: int,
    da: int,
    rng: np.random.Generator | None,
    drop: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(B, k, dv)`` frames and ``(B, da)`` audio for videos ``idx``; zeros where a modality is missing."""
    v = np.zeros((len(idx), k, dv), np.float32)
    a = np.zeros((len(idx), da), np.float32)
    for row, i in enumerate(idx):
        vid = inp.video_ids[i]
        has_v, has_a = vid in inp.video, vid in inp.audio
        if rng is not None and drop and has_v and has_a and rng.random() < drop:
            has_v, has_a = (False, True) if rng.random() < 0.5 else (True, False)
        if has_v:
            f = inp.video[vid]
            v[row] = f[sample_frames(len(f), k, rng)]
        if has_a:
            a[row] = inp.audio[vid]
    return v, a


def build_fusion(cfg: FusionTrainConfig, n_classes: int, dv: int, da: int) -> LateFusionNet:
    return LateFusionNet(
        n_classes, video_dim=dv, audio_dim=da, n=cfg.n, k=cfg.k, hidden=cfg.hidden, dropout=cfg.dropout
    )


@torch.no_grad()
def fusion_probs(
    model: LateFusionNet,
    inputs: Sequence[FusionInputs],
    n_classes: int,
    device: torch.device,
    use_video: bool = True,
    use_audio: bool = True,
    multilabel: bool = False,
) -> np.ndarray:
    """Clip probabilities with k uniformly spaced frames, averaged over the inputs of each unimodal pair
    the fusion was trained on (one pair: its scores as they are); ``use_*=False`` removes a modality."""
    model.eval()
    total = np.zeros((len(inputs[0].video_ids), n_classes), np.float32)
    for inp in inputs:
        for start in range(0, len(inp.video_ids), EVAL_BATCH):  # bounded memory, whatever the split's size
            idx = np.arange(start, min(start + EVAL_BATCH, len(inp.video_ids)))
            v, a = stack_batch(inp, idx, model.k, model.video_dim, model.audio_dim, rng=None)
            vt = torch.from_numpy(v).to(device) if use_video else None
            at = torch.from_numpy(a).to(device) if use_audio else None
            total[idx] += activate(model(vt, at), multilabel).cpu().numpy()
    return total / len(inputs)


def train_fusion(
    train: FusionInputs,
    val: Sequence[FusionInputs],
    n_classes: int,
    dv: int,
    da: int,
    cfg: FusionTrainConfig,
    device: torch.device,
) -> tuple[LateFusionNet, FitResult]:
    seed_everything(cfg.seed)
    model = build_fusion(cfg, n_classes, dv, da).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)

    def batches(_: int) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        order = rng.permutation(len(train.video_ids))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            v, a = stack_batch(train, idx, cfg.k, dv, da, rng, cfg.modality_dropout)
            xb = (torch.from_numpy(v).to(device), torch.from_numpy(a).to(device))
            yield xb, torch.from_numpy(train.labels[idx]).to(device)

    def validate(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        return val[0].labels, fusion_probs(m, val, n_classes, device, multilabel=cfg.multilabel)

    result = fit(
        model, optimizer, batches, validate, cfg, train.labels, n_classes, forward=lambda m, xb: m(*xb)
    )
    return model, result
