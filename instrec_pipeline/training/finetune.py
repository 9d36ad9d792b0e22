"""Optional fine-tuning of Inception v3 itself on a dataset's stored frames (the paper's video branch).

The default video model trains a head on embeddings extracted once; the paper fine-tuned the network
(11–98 h per model on its GPUs). Behind the ``finetune`` flag the last Inception blocks (``Mixed_7*``) and
a softmax/sigmoid head are trained frame-level on the train split, ``k`` random frames per video per
epoch, early-stopped on the val split, with every batch norm frozen (batches of a few videos give poor
statistics). Training frames are flipped left–right at random (the paper's only augmentation); frames
seen at validation and embedding time never are (the 2017 code also flipped at test time, a defect: a
test prediction should not depend on a coin toss). The backbone is then saved as a plain Inception v3
state dict, every split is re-embedded with it into its own store modality, and the usual head trains on
those embeddings, so evaluation, fusion and prediction read fine-tuned features through the same code.
Meant for a GPU; correct on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from instrec_pipeline.features.partition import embedding_partition, inception_weights_of
from instrec_pipeline.features.visual import EMBEDDING_DIM, FrameEmbedder, Normalise, load_inception
from instrec_pipeline.store import FINETUNED_EMBEDDINGS, FRAMES, Frames
from instrec_pipeline.store.atomic import atomic_write
from instrec_pipeline.store.layout import Layout
from instrec_pipeline.training.data import manifest_labels, sample_frames
from instrec_pipeline.training.loop import FitResult, TrainSettings, activate, fit, seed_everything

#: Store modality of the embeddings made by a fine-tuned backbone (the plain ones stay as they are).
TRAINABLE = ("Mixed_7a", "Mixed_7b", "Mixed_7c")
#: Second entropy word of the flips' generator: its own stream of the run's seed, so switching flips on
#: or off leaves the frames each epoch samples unchanged (runs with and without them stay comparable).
_FLIP_STREAM = 1


def random_hflip(frames: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """``(n, H, W, C)`` frames with each one mirrored left–right with probability ``p`` (a new array).

    Instruments look the same mirrored (left-handed players exist), so a flip is a free extra view of a
    training frame; applied per frame, so the ``k`` frames of a video see different mirrorings.
    """
    flip = rng.random(len(frames)) < p
    out = np.array(frames, copy=True)
    out[flip] = out[flip][:, :, ::-1]
    return out


def training_batch(
    videos: Iterable[np.ndarray], k: int, rng: np.random.Generator, flip_rng: np.random.Generator | None
) -> np.ndarray:
    """``k`` random frames of each video, stacked; randomly mirrored when ``flip_rng`` is given.

    ``videos`` may be lazy: each is read, sampled and dropped in turn, so one whole video at most is in
    memory (a long one decodes to hundreds of MB).
    """
    x = np.concatenate([video[sample_frames(len(video), k, rng)] for video in videos])
    return x if flip_rng is None else random_hflip(x, flip_rng)


def evaluation_frames(video: np.ndarray, k: int) -> np.ndarray:
    """``k`` uniformly spaced frames of a video, as stored: no randomness and no flip at evaluation."""
    return video[sample_frames(len(video), k, None)]


class InceptionClassifier(nn.Module):
    """uint8 NHWC frames → Inception v3 (pool features) → linear head; only ``TRAINABLE`` blocks learn."""

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(EMBEDDING_DIM, n_classes)
        self.normalise = Normalise()
        for name, p in backbone.named_parameters():
            p.requires_grad = name.startswith(TRAINABLE)

    def train(self, mode: bool = True) -> InceptionClassifier:
        super().train(mode)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()  # frozen statistics: fine-tuning batches hold frames of a few videos only
        return self

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalise(frames)))


def _split(
    layout: Layout, dataset: str, split: str, classes: list[str], multilabel: bool
) -> tuple[Frames, list[str], np.ndarray]:
    """The split's stored frames and its labels, for the videos that have frames."""
    frames = Frames.read(layout.features.group(dataset, split, "r"))
    ids, labels = manifest_labels(layout, dataset, split, classes, multilabel)
    keep = [i for i, v in enumerate(ids) if v in frames.array]
    return frames, [ids[i] for i in keep], labels[keep]


def finetune_inception(
    layout: Layout,
    dataset: str,
    classes: list[str],
    settings: TrainSettings,
    *,
    k: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    flip: bool = True,
) -> tuple[Path, FitResult]:
    """Fine-tune from the weights the dataset's embeddings were made with; returns the saved backbone.

    ``flip``: mirror training frames at random (seeded by ``settings.seed``); validation never does.
    """
    seed, multilabel = settings.seed, settings.multilabel
    seed_everything(seed)
    train_frames, train_ids, y_train = _split(layout, dataset, "train", classes, multilabel)
    val_frames, val_ids, y_val = _split(layout, dataset, "val", classes, multilabel)
    if not train_ids:
        raise ValueError("no training video has frames: cannot fine-tune Inception")
    start = layout.features.modality(dataset, "train", "embeddings").params
    backbone, _ = load_inception(*inception_weights_of(start))
    model = InceptionClassifier(backbone.to(memory_format=torch.channels_last), len(classes)).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    rng = np.random.default_rng(seed)
    flip_rng = np.random.default_rng([seed, _FLIP_STREAM]) if flip else None
    per_batch = max(1, batch_size // k)

    def batches(_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(len(train_ids))
        for i in range(0, len(order), per_batch):
            picked = order[i : i + per_batch]
            x = training_batch((train_frames.get(train_ids[j]) for j in picked), k, rng, flip_rng)
            y = np.concatenate([np.repeat(y_train[j : j + 1], k, axis=0) for j in picked])
            yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    @torch.no_grad()
    def validate(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        probs = []
        for v in val_ids:
            x = torch.from_numpy(evaluation_frames(val_frames.get(v), k)).to(device)
            probs.append(activate(m(x), multilabel).mean(0).cpu().numpy())  # fit() sets the precision
        return y_val, np.stack(probs) if probs else np.zeros((0, len(classes)), np.float32)

    result = fit(model, optimizer, batches, validate, settings, y_train, len(classes), scheduler=scheduler)
    path = layout.model(dataset, "inception_finetuned")
    atomic_write(path, lambda fh: torch.save(model.backbone.state_dict(), fh))
    return path, result


def embed_with(layout: Layout, dataset: str, weights: Path, device: str) -> None:
    """Re-embed every split's frames with fine-tuned weights (resumable; redone when the weights change)."""
    embedder = FrameEmbedder(str(weights), device)
    for split in ("train", "val", "test"):
        with layout.features.lock(dataset, split, "fine-tuning re-embedding", wait_s=600):
            group = layout.features.group(dataset, split)
            if FRAMES in group:
                embedding_partition(group, embedder, FINETUNED_EMBEDDINGS)
