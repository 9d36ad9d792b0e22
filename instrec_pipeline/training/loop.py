"""The one training loop all models share: seeded, early-stopped on the val split, best state kept.

The test split never reaches this module: it is the report's alone.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instrec_pipeline.evaluation.metrics import hit_at_k
from instrec_pipeline.evaluation.multilabel import pr_auc_macro
from instrec_pipeline.features.visual import resolve_precision
from instrec_pipeline.parallel import loader_workers
from instrec_pipeline.store.atomic import atomic_write

Batch = tuple[Any, torch.Tensor]


def seed_everything(seed: int) -> None:
    """Same seed, same CPU → same weights and metrics (deterministic kernels where torch has them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def activate(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Scores from logits: independent sigmoids when a video may carry several labels, else softmax.

    In float32 whatever the logits' dtype (bf16 under autocast), so scores are comparable and numpy-ready.
    """
    logits = logits.float()
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)


def val_metric(multilabel: bool) -> str:
    """What early stopping maximises: Hit@1, or macro PR-AUC (threshold-free) for multi-label data."""
    return "val_pr_auc" if multilabel else "val_hit1"


def _validation(y: np.ndarray, p: np.ndarray, multilabel: bool) -> tuple[float, float]:
    """(loss, score) on val: the same losses as training, computed from the video-level scores."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    if multilabel:
        loss = float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())
        return loss, float(np.nan_to_num(pr_auc_macro(y, p)))
    return float(-np.log(q[np.arange(len(y)), y]).mean()), hit_at_k(y, p, 1)


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    #: Val score per hyper-parameter value tried when one was chosen on val (e.g. ``{"lr=0.01": 0.8}``).
    tuning: dict[str, float] = field(default_factory=dict)
    #: The arithmetic the model was trained and validated in (``settings.precision`` resolved): fp32 | bf16.
    precision: str = "fp32"
    #: Of ``seconds``, those the training steps waited for their next batch (reading, cropping, the
    #: DataLoader workers): near zero when the input keeps the model busy, most of it when reading binds.
    input_seconds: float = 0.0


def _waited(items: Iterable[Batch], result: FitResult) -> Iterator[Batch]:
    """``items``, adding the time spent waiting for each to ``result.input_seconds``."""
    it = iter(items)
    while True:
        start = time.perf_counter()
        item = next(it, None)
        result.input_seconds += time.perf_counter() - start
        if item is None:
            return
        yield item


@dataclass(frozen=True)
class TrainSettings:
    """What every trainer shares: when to stop, class balancing, the label setting and the seed."""

    max_epochs: int = 50
    patience: int = 5
    balanced: bool = False  # weight the loss by inverse class frequency (YT-8M is 30:1)
    multilabel: bool = False  # sigmoid + BCE: the dataset's setting, not a tuning knob
    seed: int = 0
    stream_budget_bytes: int = 512 << 20  # training's shuffle window: peak memory, whatever the dataset
    #: DataLoader processes reading the next blocks when the split exceeds the budget; ``None``: as many as
    #: pay on the device (``parallel.loader_workers``: none on the CPU, up to 4 beside a GPU).
    loader_workers: int | None = None
    #: auto | fp32 | bf16. bf16 autocast (weights, optimiser and loss stay float32) where it pays: ``auto``
    #: picks it on CUDA and on CPUs with bf16 units, as for the embeddings (``resolve_precision``); fp32
    #: runs exactly the float32 arithmetic of before.
    precision: str = "auto"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def workers(self, device: torch.device) -> int:
        """``loader_workers``, or the device's default when unset."""
        return loader_workers(device.type) if self.loader_workers is None else self.loader_workers


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: Callable[[int], Iterable[Batch]],
    validate: Callable[[nn.Module], tuple[np.ndarray, np.ndarray]],
    settings: TrainSettings,
    train_labels: np.ndarray,
    n_classes: int,
    *,
    forward: Callable[[nn.Module, Any], torch.Tensor] = lambda m, x: m(x),
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> FitResult:
    """Train until the val score (ties: lower val loss) has not improved for ``settings.patience`` epochs.

    ``train_batches(epoch)`` yields ``(inputs, labels)``; ``forward(model, inputs)`` gives logits
    (``model(inputs)`` by default);
    ``validate(model)`` returns video-level ``(y_true, probs)`` on the val split; ``train_labels`` (one
    row per training video) set the class weights when ``settings.balanced``. Single-label: softmax
    cross-entropy, Hit@1; multi-label (multi-hot labels): sigmoid BCE, macro PR-AUC. The best epoch's
    weights are loaded back into ``model`` at the end. Training steps and ``validate`` run under bf16
    autocast when ``settings.precision`` resolves to bf16 (recorded in the result's ``precision``).
    """
    start = time.perf_counter()
    multilabel = settings.multilabel
    device = next(model.parameters()).device
    precision = resolve_precision(settings.precision, device)

    def autocast() -> torch.autocast:
        # bf16 needs no loss scaling (unlike fp16); disabled, this is a no-op: fp32 stays bit-identical.
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    weights = class_weights(train_labels, n_classes, device) if settings.balanced else None
    if multilabel:
        loss_fn: nn.Module = nn.BCEWithLogitsLoss(pos_weight=weights)
    else:
        loss_fn = nn.CrossEntropyLoss(weight=weights)
    metric = val_metric(multilabel)
    result = FitResult(history={"train_loss": [], "val_loss": [], metric: []}, precision=precision)
    best: tuple[float, float] | None = None
    best_state = copy.deepcopy(model.state_dict())
    for epoch in range(settings.max_epochs):
        model.train()
        losses = []
        for inputs, labels in _waited(train_batches(epoch), result):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(forward(model, inputs).float(), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if scheduler is not None:
            scheduler.step()
        model.eval()
        with autocast():
            y_val, p_val = validate(model)
        val_loss, val_score = _validation(y_val, p_val, multilabel)
        result.history["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        result.history["val_loss"].append(val_loss)
        result.history[metric].append(val_score)
        result.epochs_run = epoch + 1
        key = (val_score, -val_loss)
        if best is None or key > best:
            best, result.best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= settings.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def save_checkpoint(
    path: Path, model: nn.Module, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    """State dict + plain metadata + extra tensors, loadable with ``torch.load(weights_only=True)``."""
    payload = {"state_dict": model.state_dict(), "meta": meta, "tensors": tensors}
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: materialise the model asset first")
    return torch.load(path, map_location="cpu", weights_only=True)


def class_weights(labels: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor:
    """Inverse-frequency weights (mean 1), for imbalanced datasets such as YT-8M's 30:1.

    Multi-hot labels get BCE's ``pos_weight`` instead: negatives / positives per class (rare tags count more).
    """
    if labels.ndim == 2:
        positives = labels.sum(0).clip(min=1)
        return torch.tensor((len(labels) - positives) / positives, dtype=torch.float32, device=device).clamp(
            min=1.0
        )
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64).clip(min=1)
    w = counts.sum() / (n_classes * counts)
    return torch.tensor(w / w.mean(), dtype=torch.float32, device=device)
