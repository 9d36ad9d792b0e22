"""Per-dataset model assets: three audio CNNs, the video model and the late fusion, trained on all splits'
stored features (train to fit, val to stop early; test is the report's alone)."""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.datasets.registry import datasets
from instrec_pipeline.defs.assets.common import GPU_STAGE
from instrec_pipeline.defs.automation.declarative import ON_NEW_FEATURES
from instrec_pipeline.defs.partitions import all_splits_of_dataset, dataset_partitions
from instrec_pipeline.defs.resources import ComputeResource, StoreResource
from instrec_pipeline.features import quality
from instrec_pipeline.features.visual import resolve_device
from instrec_pipeline.models import AUDIO_MODELS, AUDIO_TITLES
from instrec_pipeline.store import RaggedArray
from instrec_pipeline.store.layout import Layout, read_csv
from instrec_pipeline.training.audio import STRATEGIES, STRATEGY_TITLES, AudioTrainConfig
from instrec_pipeline.training.fusion import FusionTrainConfig
from instrec_pipeline.training.loop import val_metric
from instrec_pipeline.training.runs import (
    replicate,
    train_and_save_audio,
    train_and_save_fusion,
    train_and_save_video,
)
from instrec_pipeline.training.video import VideoTrainConfig

GROUP = "models"


class TrainConfig(Config):
    """Launchpad overrides; unset (0 / empty) keeps the dataset's default (the paper's, or its ``training``
    settings)."""

    max_epochs: int = 0
    patience: int = 0
    lr: float = 0.0
    balanced: bool | None = None
    seed: int | None = None
    #: video_model only: fine-tune Inception v3's last blocks on the frames first (meant for a GPU).
    finetune_inception: bool = False


def _configured(base: Any, dataset: str, kind: str, config: TrainConfig, precision: str = "auto") -> Any:
    """The paper's defaults, then the dataset's ``training`` settings, then what the launchpad set: its
    overrides and ``compute.precision`` (under ``auto`` the dataset's precision, default auto, holds)."""
    spec = datasets()[dataset]
    cfg = replace(base, **spec.training.get(kind, {}), multilabel=spec.multilabel)
    overrides = {"max_epochs": config.max_epochs or None, "patience": config.patience or None,
                 "lr": config.lr or None, "balanced": config.balanced, "seed": config.seed}  # fmt: skip
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if precision != "auto":
        cfg = replace(cfg, precision=precision)
    given = spec.training.get(kind, {})
    if hasattr(cfg, "lr_search") and (config.lr or "lr" in given) and "lr_search" not in given:
        cfg = replace(cfg, lr_search=())  # a rate that was asked for is used, not searched around
    return cfg


def _verify_splits(layout: Layout, dataset: str) -> None:
    """Stop before training when splits overlap or were extracted differently (a leak or a mix-up)."""
    manifests = {s: read_csv(layout.table(dataset, s, "manifest")) for s in SPLITS}
    raw = {s: read_csv(layout.table(dataset, s, "raw_videos")) for s in SPLITS
           if layout.table(dataset, s, "raw_videos").exists()}  # fmt: skip
    params = {}
    for split in SPLITS:
        group = layout.features.group(dataset, split, mode="r")
        params[split] = {name: RaggedArray.read(group, name).params_digest for name in group.group_keys()}
    finding = quality.splits_clean(manifests, raw, params)
    if not finding.passed:
        raise Failure(description=f"{dataset}: {finding.reason}", metadata=finding.figures)


def _training_metadata(meta: dict) -> dict[str, object]:
    hist = meta["history"]
    metric = val_metric(meta["config"].get("multilabel", False))
    return {
        "epochs_run": meta["epochs_run"],
        "best_epoch": meta["best_epoch"],
        "train_seconds": round(meta["seconds"], 1),
        # Of those, waiting for input: a large share says reading binds (more loader_workers), not the model.
        **({"input_wait_seconds": round(meta["input_seconds"], 2)} if "input_seconds" in meta else {}),
        "precision": meta.get("precision", "fp32"),
        "train_videos": meta["n_train_videos"],
        f"best_{metric}": max(hist[metric]),
        "config": MetadataValue.json(meta["config"]),
        **({"chosen_on_val": MetadataValue.json(meta["tuning"])} if "tuning" in meta else {}),
    }


def _train(
    context: AssetExecutionContext,
    config: TrainConfig,
    store: StoreResource,
    compute: ComputeResource,
    base: Any,
    kind: str,
    train: Callable[..., dict],
) -> MaterializeResult:
    """What every model asset does: settings for its dataset, train and save, report the training."""
    dataset = context.partition_key
    _verify_splits(store.layout, dataset)
    cfg = _configured(base, dataset, kind, config, compute.precision)
    spec = datasets()[dataset]
    classes, device = list(spec.classes), resolve_device(compute.device)
    meta = train(store.layout, dataset, classes, cfg, device)
    metric = val_metric(cfg.multilabel)
    seeds = {cfg.seed: max(meta["history"][metric])}
    for i in range(1, spec.seeds):  # the report's mean ± sd; replicate i fuses replicate i's nets
        context.log.info(f"{dataset}: seed replicate {i + 1}/{spec.seeds} (seed {cfg.seed + i})")
        again = train(store.layout, dataset, classes, replace(cfg, seed=cfg.seed + i), device, replicate(i))
        seeds[cfg.seed + i] = max(again["history"][metric])
    shown = ("audio_model", "embeddings", "inception_weights", "finetune_seconds", "members",
             f"insample_best_{val_metric(cfg.multilabel)}")  # fmt: skip
    extra = {k: meta[k] for k in shown if k in meta}
    if len(seeds) > 1:
        extra[f"best_{metric}_by_seed"] = MetadataValue.json({str(k): v for k, v in seeds.items()})
    return MaterializeResult(metadata={**_training_metadata(meta), **extra})


FEATURE_DEPS = [AssetDep(a, partition_mapping=all_splits_of_dataset) for a in ("log_mel", "frame_embeddings")]


def audio_model_asset(name: str) -> AssetsDefinition:
    """One asset per audio CNN, so each can be retrained (or fail) on its own."""

    @asset(
        name=f"audio_model_{name}",
        partitions_def=dataset_partitions,
        group_name=GROUP,
        deps=FEATURE_DEPS,
        code_version="1",
        kinds={"pytorch"},
        automation_condition=ON_NEW_FEATURES,
        **GPU_STAGE,
        description=f"{AUDIO_TITLES[name]} on log-mel {STRATEGY_TITLES[STRATEGIES[name][0]]}, Adam, "
        "early stopping on the val split.",
    )
    def _audio_model(
        context: AssetExecutionContext, config: TrainConfig, store: StoreResource, compute: ComputeResource
    ) -> MaterializeResult:
        return _train(
            context, config, store, compute, AudioTrainConfig(model=name), "audio", train_and_save_audio
        )

    return _audio_model


audio_models = [audio_model_asset(name) for name in AUDIO_MODELS]


@asset(
    partitions_def=dataset_partitions,
    group_name=GROUP,
    deps=FEATURE_DEPS,
    code_version="3",  # 2: the embedding standardiser floors its std; 3: lr chosen on val
    kinds={"pytorch"},
    automation_condition=ON_NEW_FEATURES,
    **GPU_STAGE,
)
def video_model(
    context: AssetExecutionContext, config: TrainConfig, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """Frame classifier over Inception embeddings: k random frames per video per epoch, SGD, lr halved /5.

    With ``finetune_inception`` the last Inception blocks are first fine-tuned on the frames and every
    split re-embedded with them (store modality ``embeddings_finetuned``)."""
    base = VideoTrainConfig(finetune=config.finetune_inception)
    return _train(context, config, store, compute, base, "video", train_and_save_video)


@asset(
    partitions_def=dataset_partitions,
    group_name=GROUP,
    deps=[*audio_models, video_model],
    code_version="2",  # 2: out-of-fold inputs, in-sample variant kept
    kinds={"pytorch"},
    automation_condition=ON_NEW_FEATURES,
    **GPU_STAGE,
)
def fusion_model(
    context: AssetExecutionContext, config: TrainConfig, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """The paper's late fusion on (k+1, n) inputs: k frame vectors + 1 audio vector, two FC 1024 + BN.

    Trained on leak-free inputs (default: 5-fold cross-fitted unimodal nets, trained here); the
    in-sample fusion (the paper's) is trained too, as the report's comparison row."""
    return _train(context, config, store, compute, FusionTrainConfig(), "fusion", train_and_save_fusion)
