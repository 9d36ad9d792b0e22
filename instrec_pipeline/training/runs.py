"""Train, save and reload each model of a dataset: the plain functions behind the model assets.

Each checkpoint holds the state dict, its training config, classes, history and (for the video model)
the feature standardiser, so evaluation and prediction rebuild exactly what was trained.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from instrec_pipeline.models import FrameClassifier, LateFusionNet
from instrec_pipeline.store import FINETUNED_EMBEDDINGS
from instrec_pipeline.store.layout import Layout
from instrec_pipeline.training.audio import AudioTrainConfig, audio_embeddings, build_model, train_audio
from instrec_pipeline.training.data import SplitData, load_split
from instrec_pipeline.training.finetune import embed_with, finetune_inception
from instrec_pipeline.training.fusion import (
    FusionInputs,
    FusionTrainConfig,
    build_fusion,
    fusion_probs,
    train_fusion,
)
from instrec_pipeline.training.loop import (
    FitResult,
    TrainSettings,
    load_checkpoint,
    save_checkpoint,
    val_metric,
)
from instrec_pipeline.training.video import (
    Standardizer,
    VideoTrainConfig,
    build_video,
    frame_embeddings,
    train_video,
)

AUDIO_PREFIX = "audio_"


def _meta(classes: list[str], cfg: dict[str, Any], fit: FitResult, n_train: int) -> dict[str, Any]:
    return {
        "classes": classes,
        "config": cfg,
        "history": fit.history,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "seconds": fit.seconds,
        "input_seconds": fit.input_seconds,
        "precision": fit.precision,  # what ``config["precision"]`` resolved to on the device trained on
        "n_train_videos": n_train,
        **({"tuning": fit.tuning} if fit.tuning else {}),
    }


def _save_audio(
    layout: Layout, dataset: str, tag: str, classes: list[str], cfg: AudioTrainConfig, model: torch.nn.Module,
    fit: FitResult, n_train: int,
) -> dict[str, Any]:  # fmt: skip
    meta = _meta(classes, cfg.as_dict(), fit, n_train)
    save_checkpoint(layout.model(dataset, tag + AUDIO_PREFIX + cfg.model), model, meta, {})
    return meta


def replicate(i: int) -> str:
    """Checkpoint prefix of the ``i``-th seed replicate of a dataset's models (0: the main ones)."""
    return "" if i == 0 else f"seed_replicates/{i}/"


def train_and_save_audio(
    layout: Layout,
    dataset: str,
    classes: list[str],
    cfg: AudioTrainConfig,
    device: torch.device,
    tag: str = "",
) -> dict[str, Any]:
    train = load_split(layout, dataset, "train", classes, cfg.mel, cfg.multilabel)
    val = load_split(layout, dataset, "val", classes, cfg.mel, cfg.multilabel)
    model, fit = train_audio(train, val, len(classes), cfg, device)
    return _save_audio(layout, dataset, tag, classes, cfg, model, fit, len(train.audio))


def load_audio(
    layout: Layout, dataset: str, name: str, device: torch.device, tag: str = ""
) -> tuple[torch.nn.Module, AudioTrainConfig, dict]:
    """An audio net by name; ``tag`` selects one of a fusion's cross-fitted members."""
    ckpt = load_checkpoint(layout.model(dataset, tag + AUDIO_PREFIX + name))
    cfg = AudioTrainConfig(**ckpt["meta"]["config"])
    model = build_model(cfg, len(ckpt["meta"]["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), cfg, ckpt["meta"]


def train_and_save_video(
    layout: Layout,
    dataset: str,
    classes: list[str],
    cfg: VideoTrainConfig,
    device: torch.device,
    tag: str = "",
) -> dict[str, Any]:
    """The head on stored embeddings; with ``cfg.finetune``, on those of a freshly fine-tuned Inception
    (seed replicates reuse the main model's fine-tuned embeddings: one store modality per dataset)."""
    embeddings, extra = "embeddings", {}
    if cfg.finetune and tag:
        embeddings = FINETUNED_EMBEDDINGS
    elif cfg.finetune:
        settings = TrainSettings(
            cfg.finetune_epochs, cfg.patience, cfg.balanced, cfg.multilabel, cfg.seed, precision=cfg.precision
        )
        weights, tuned = finetune_inception(
            layout, dataset, classes, settings, k=cfg.finetune_k, lr=cfg.finetune_lr,
            batch_size=cfg.batch_size, device=device,
        )  # fmt: skip
        embed_with(layout, dataset, weights, str(device))
        embeddings = FINETUNED_EMBEDDINGS
        extra = {"inception_weights": str(weights), "finetune_history": tuned.history,
                 "finetune_seconds": tuned.seconds}  # fmt: skip
    train = load_split(layout, dataset, "train", classes, None, cfg.multilabel, embeddings)
    val = load_split(layout, dataset, "val", classes, None, cfg.multilabel, embeddings)
    return _fit_and_save_video(layout, dataset, tag, classes, cfg, train, val, device, embeddings, extra)


def _fit_and_save_video(
    layout: Layout, dataset: str, tag: str, classes: list[str], cfg: VideoTrainConfig, train: SplitData,
    val: SplitData, device: torch.device, embeddings: str, extra: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    model, norm, fit, cfg = train_video(train, val, len(classes), cfg, device)
    meta = {**_meta(classes, cfg.as_dict(), fit, len(train.frames)), "embeddings": embeddings, **extra}
    save_checkpoint(layout.model(dataset, tag + "video"), model, meta, norm.tensors())
    return meta


def load_video(
    layout: Layout, dataset: str, device: torch.device, tag: str = ""
) -> tuple[FrameClassifier, Standardizer, dict]:
    ckpt = load_checkpoint(layout.model(dataset, tag + "video"))
    cfg = VideoTrainConfig(**ckpt["meta"]["config"])
    model = build_video(cfg, len(ckpt["meta"]["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    norm = Standardizer(ckpt["tensors"]["mean"].numpy(), ckpt["tensors"]["std"].numpy())
    return model.to(device).eval(), norm, ckpt["meta"]


@dataclass
class Unimodal:
    """The frozen unimodal nets a fusion model is built on."""

    audio_name: str
    audio: torch.nn.Module
    audio_cfg: AudioTrainConfig
    video: FrameClassifier
    norm: Standardizer
    video_meta: dict[str, Any]
    tag: str = ""

    @classmethod
    def load(
        cls, layout: Layout, dataset: str, audio_name: str, device: torch.device, tag: str = ""
    ) -> Unimodal:
        """The full-train nets, or (``tag``) a seed replicate's or one of a fusion's cross-fitted pairs."""
        audio, audio_cfg, _ = load_audio(layout, dataset, audio_name, device, tag)
        video, norm, video_meta = load_video(layout, dataset, device, tag)
        return cls(audio_name, audio, audio_cfg, video, norm, video_meta, tag)

    @property
    def embeddings(self) -> str:
        """The frame-embedding modality the video model was trained on."""
        return self.video_meta.get("embeddings", "embeddings")

    def split(self, layout: Layout, dataset: str, split: str, classes: list[str]) -> SplitData:
        return load_split(
            layout, dataset, split, classes, self.audio_cfg.mel, self.audio_cfg.multilabel, self.embeddings
        )

    def fusion_inputs(self, data: SplitData, device: torch.device) -> FusionInputs:
        return FusionInputs(
            data.video_ids, data.labels,
            frame_embeddings(self.video, data, self.norm, device),
            audio_embeddings(self.audio, data, self.audio_cfg, device),
        )  # fmt: skip


#: Checkpoint names: the fusion trained on leak-free inputs, and the in-sample one kept for comparison.
FUSION, FUSION_INSAMPLE = "fusion", "fusion_insample"


def _held_out_parts(train: SplitData, cfg: FusionTrainConfig) -> list[list[str]]:
    """The train videos each cross-fitted pair is *not* trained on: K stratified folds, or one slice."""
    ids = np.asarray(train.video_ids)
    y = train.labels.argmax(1) if train.labels.ndim == 2 else train.labels  # multi-label: first label
    counts = np.bincount(y)
    if cfg.inputs == "holdout":
        strat = y if counts[counts > 0].min() >= 2 else None
        _, held = train_test_split(ids, test_size=cfg.holdout, random_state=cfg.seed, stratify=strat)
        return [sorted(held)]
    k = min(cfg.folds, len(ids))
    # Stratified while every class can fill each fold; a rarer class makes folds unstratified, not errors.
    split = StratifiedKFold(k, shuffle=True, random_state=cfg.seed) if counts[counts > 0].min() >= k \
        else KFold(k, shuffle=True, random_state=cfg.seed)  # fmt: skip
    return [sorted(ids[held]) for _, held in split.split(ids, y)]


def _cross_fitted(
    layout: Layout, dataset: str, classes: list[str], cfg: FusionTrainConfig, uni: Unimodal,
    train: SplitData, val: SplitData, device: torch.device,
) -> tuple[FusionInputs, list[str]]:  # fmt: skip
    """Train one unimodal pair per held-out part (saved under a member tag) and return the train inputs
    in which every video's features come from the pair that did not see it, with the members' tags."""
    video_cfg = VideoTrainConfig(**{**uni.video_meta["config"], "lr_search": ()})  # the full model's lr
    tags, ids, video, audio = [], [], {}, {}
    for i, held in enumerate(_held_out_parts(train, cfg)):
        tag = f"{uni.tag}{FUSION}_members/{cfg.inputs}{i}/"
        seen = train.subset(sorted(set(train.video_ids) - set(held)))
        net, fit = train_audio(seen, val, len(classes), uni.audio_cfg, device)
        _save_audio(layout, dataset, tag, classes, uni.audio_cfg, net, fit, len(seen.video_ids))
        _fit_and_save_video(layout, dataset, tag, classes, video_cfg, seen, val, device, uni.embeddings, {})
        member = Unimodal.load(layout, dataset, uni.audio_name, device, tag)
        inputs = member.fusion_inputs(train.subset(held), device)
        video.update({v: inputs.video for v in held})
        audio.update(inputs.audio)
        tags.append(tag)
        ids += held
    return FusionInputs(ids, train.labels_for(ids), Routed(video), audio), tags


class Routed(Mapping[str, np.ndarray]):
    """Each video's features from the mapping that owns it (its cross-fitted pair's, computed on demand)."""

    def __init__(self, owners: dict[str, Mapping[str, np.ndarray]]) -> None:
        self.owners = owners

    def __getitem__(self, video_id: str) -> np.ndarray:
        return self.owners[video_id][video_id]

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.owners and video_id in self.owners[video_id]

    def __iter__(self) -> Iterator[str]:
        return (v for v in self.owners if v in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def train_and_save_fusion(
    layout: Layout,
    dataset: str,
    classes: list[str],
    cfg: FusionTrainConfig,
    device: torch.device,
    tag: str = "",
) -> dict[str, Any]:
    """The fusion on leak-free inputs (``cfg.inputs``), plus the in-sample fusion kept for comparison; a
    seed replicate (``tag``) fuses its own replicate's unimodal nets."""
    uni = Unimodal.load(layout, dataset, cfg.audio_model, device, tag)
    train = uni.split(layout, dataset, "train", classes)
    val = uni.split(layout, dataset, "val", classes)
    insample = _fit_and_save_fusion(
        layout, dataset, tag + (FUSION if cfg.inputs == "insample" else FUSION_INSAMPLE), classes, cfg,
        uni.fusion_inputs(train, device), [uni], [tag], val, device,
    )  # fmt: skip
    if cfg.inputs == "insample":
        layout.model(dataset, tag + FUSION_INSAMPLE).unlink(missing_ok=True)  # no stale comparison row
        return insample
    inputs, tags = _cross_fitted(layout, dataset, classes, cfg, uni, train, val, device)
    members = [Unimodal.load(layout, dataset, uni.audio_name, device, t) for t in tags]
    name = tag + FUSION
    meta = _fit_and_save_fusion(layout, dataset, name, classes, cfg, inputs, members, tags, val, device)
    metric = val_metric(cfg.multilabel)
    return {**meta, f"insample_best_{metric}": max(insample["history"][metric])}


def _fit_and_save_fusion(
    layout: Layout, dataset: str, name: str, classes: list[str], cfg: FusionTrainConfig, train: FusionInputs,
    members: list[Unimodal], tags: list[str], val: SplitData, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    vals = [m.fusion_inputs(val, device) for m in members]
    dv, da = members[0].video.embedding_dim, members[0].audio.embedding_dim
    model, fit = train_fusion(train, vals, len(classes), dv, da, cfg, device)
    meta = _meta(classes, cfg.as_dict(), fit, len(train.video_ids))
    meta.update({"audio_model": cfg.audio_model, "video_dim": dv, "audio_dim": da, "members": tags})
    save_checkpoint(layout.model(dataset, name), model, meta, {})
    return meta


@dataclass
class TrainedFusion:
    """A fusion net with the unimodal pairs whose features it reads: inference for evaluation and
    prediction alike (scores averaged over the pairs)."""

    model: LateFusionNet
    meta: dict[str, Any]
    members: list[Unimodal]

    def inputs(self, data: SplitData, device: torch.device) -> list[FusionInputs]:
        return [m.fusion_inputs(data, device) for m in self.members]

    def probs(
        self, inputs: list[FusionInputs], device: torch.device, use_video: bool = True, use_audio: bool = True
    ) -> np.ndarray:
        multilabel = bool(self.meta["config"].get("multilabel"))
        n = len(self.meta["classes"])
        return fusion_probs(self.model, inputs, n, device, use_video, use_audio, multilabel)


def load_fusion(
    layout: Layout, dataset: str, device: torch.device, name: str = FUSION, uni: Unimodal | None = None
) -> TrainedFusion:
    """A saved fusion and its members (``uni``, if given, is reused where it is one of them)."""
    ckpt = load_checkpoint(layout.model(dataset, name))
    meta = ckpt["meta"]
    cfg = FusionTrainConfig(**meta["config"])
    model = build_fusion(cfg, len(meta["classes"]), meta["video_dim"], meta["audio_dim"])
    model.load_state_dict(ckpt["state_dict"])
    members = [
        uni if uni and uni.tag == tag else Unimodal.load(layout, dataset, meta["audio_model"], device, tag)
        for tag in meta.get("members", [""])
    ]
    return TrainedFusion(model.to(device).eval(), meta, members)


def history_arrays(meta: dict[str, Any]) -> dict[str, list[float]]:
    return {k: [float(x) for x in np.asarray(v)] for k, v in meta["history"].items()}
