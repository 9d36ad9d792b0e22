"""Train, save and reload each model of a dataset: the plain functions behind the model assets.

Each checkpoint holds the state dict, its training config, classes, history and (for the video model)
the feature standardiser, so evaluation and prediction rebuild exactly what was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from instrec_pipeline.models import FrameClassifier, LateFusionNet
from instrec_pipeline.store import FINETUNED_EMBEDDINGS
from instrec_pipeline.store.layout import Layout
from instrec_pipeline.training.audio import AudioTrainConfig, audio_embeddings, build_model, train_audio
from instrec_pipeline.training.data import SplitData, load_split
from instrec_pipeline.training.finetune import embed_with, finetune_inception
from instrec_pipeline.training.fusion import FusionInputs, FusionTrainConfig, build_fusion, train_fusion
from instrec_pipeline.training.loop import FitResult, TrainSettings, load_checkpoint, save_checkpoint
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
        "n_train_videos": n_train,
    }


def train_and_save_audio(
    layout: Layout, dataset: str, classes: list[str], cfg: AudioTrainConfig, device: torch.device
) -> dict[str, Any]:
    train = load_split(layout, dataset, "train", classes, cfg.mel, cfg.multilabel)
    val = load_split(layout, dataset, "val", classes, cfg.mel, cfg.multilabel)
    model, fit = train_audio(train, val, len(classes), cfg, device)
    meta = _meta(classes, cfg.as_dict(), fit, len(train.audio))
    save_checkpoint(layout.model(dataset, AUDIO_PREFIX + cfg.model), model, meta, {})
    return meta


def load_audio(
    layout: Layout, dataset: str, name: str, device: torch.device
) -> tuple[torch.nn.Module, AudioTrainConfig, dict]:
    ckpt = load_checkpoint(layout.model(dataset, AUDIO_PREFIX + name))
    cfg = AudioTrainConfig(**ckpt["meta"]["config"])
    model = build_model(cfg, len(ckpt["meta"]["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), cfg, ckpt["meta"]


def train_and_save_video(
    layout: Layout, dataset: str, classes: list[str], cfg: VideoTrainConfig, device: torch.device
) -> dict[str, Any]:
    """The head on stored embeddings; with ``cfg.finetune``, on those of a freshly fine-tuned Inception."""
    embeddings, extra = "embeddings", {}
    if cfg.finetune:
        settings = TrainSettings(cfg.finetune_epochs, cfg.patience, cfg.balanced, cfg.multilabel, cfg.seed)
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
    model, norm, fit = train_video(train, val, len(classes), cfg, device)
    meta = {**_meta(classes, cfg.as_dict(), fit, len(train.frames)), "embeddings": embeddings, **extra}
    save_checkpoint(layout.model(dataset, "video"), model, meta, norm.tensors())
    return meta


def load_video(
    layout: Layout, dataset: str, device: torch.device
) -> tuple[FrameClassifier, Standardizer, dict]:
    ckpt = load_checkpoint(layout.model(dataset, "video"))
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

    @classmethod
    def load(cls, layout: Layout, dataset: str, audio_name: str, device: torch.device) -> Unimodal:
        audio, audio_cfg, _ = load_audio(layout, dataset, audio_name, device)
        video, norm, video_meta = load_video(layout, dataset, device)
        return cls(audio_name, audio, audio_cfg, video, norm, video_meta)

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


def train_and_save_fusion(
    layout: Layout, dataset: str, classes: list[str], cfg: FusionTrainConfig, device: torch.device
) -> dict[str, Any]:
    uni = Unimodal.load(layout, dataset, cfg.audio_model, device)
    train = uni.fusion_inputs(uni.split(layout, dataset, "train", classes), device)
    val = uni.fusion_inputs(uni.split(layout, dataset, "val", classes), device)
    dv, da = uni.video.embedding_dim, uni.audio.embedding_dim
    model, fit = train_fusion(train, val, len(classes), dv, da, cfg, device)
    meta = _meta(classes, cfg.as_dict(), fit, len(train.video_ids))
    meta.update({"audio_model": cfg.audio_model, "video_dim": dv, "audio_dim": da})
    save_checkpoint(layout.model(dataset, "fusion"), model, meta, {})
    return meta


def load_fusion(layout: Layout, dataset: str, device: torch.device) -> tuple[LateFusionNet, dict]:
    ckpt = load_checkpoint(layout.model(dataset, "fusion"))
    meta = ckpt["meta"]
    cfg = FusionTrainConfig(**meta["config"])
    model = build_fusion(cfg, len(meta["classes"]), meta["video_dim"], meta["audio_dim"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), meta


def history_arrays(meta: dict[str, Any]) -> dict[str, list[float]]:
    return {k: [float(x) for x in np.asarray(v)] for k, v in meta["history"].items()}
