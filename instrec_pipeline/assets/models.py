"""Per-dataset model assets: the audio CNN, the video model and the late fusion, trained on all splits'
stored features (train to fit, val to stop early; test is the report's alone)."""

from dataclasses import replace

from dagster import AssetDep, AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from instrec_pipeline.assets.features import frame_embeddings, log_mel
from instrec_pipeline.datasets.registry import datasets
from instrec_pipeline.features.visual import resolve_device
from instrec_pipeline.partitions import all_splits_of_dataset, dataset_partitions
from instrec_pipeline.resources import ComputeResource, StoreResource
from instrec_pipeline.training.audio import AudioTrainConfig
from instrec_pipeline.training.fusion import FusionTrainConfig
from instrec_pipeline.training.runs import train_and_save_audio, train_and_save_fusion, train_and_save_video
from instrec_pipeline.training.video import VideoTrainConfig

GROUP = "models"


class TrainConfig(Config):
    """Launchpad overrides; 0 keeps the dataset's default (the paper's, or its ``training`` settings)."""

    max_epochs: int = 0
    patience: int = 0
    lr: float = 0.0
    balanced: bool = False
    seed: int = 0


def _configured(base: object, dataset: str, kind: str, config: TrainConfig) -> object:
    cfg = replace(base, **datasets()[dataset].training.get(kind, {}))
    overrides = {
        k: v
        for k, v in {"max_epochs": config.max_epochs, "patience": config.patience, "lr": config.lr}.items()
        if v
    }
    return replace(cfg, **overrides, balanced=config.balanced, seed=config.seed)


def _deps() -> list[AssetDep]:
    return [AssetDep(a, partition_mapping=all_splits_of_dataset) for a in (log_mel, frame_embeddings)]


def _training_metadata(meta: dict) -> dict[str, object]:
    hist = meta["history"]
    return {
        "epochs_run": meta["epochs_run"],
        "best_epoch": meta["best_epoch"],
        "train_seconds": round(meta["seconds"], 1),
        "train_videos": meta["n_train_videos"],
        "best_val_hit1": max(hist["val_hit1"]),
        "config": MetadataValue.json(meta["config"]),
    }


@asset(partitions_def=dataset_partitions, group_name=GROUP, deps=_deps(), code_version="1", pool="gpu")
def audio_model(
    context: AssetExecutionContext, config: TrainConfig, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """Choi et al. 2016 on log-mel UC segments (10 per video, predictions averaged), Adam, early stopping."""
    dataset = context.partition_key
    cfg = _configured(AudioTrainConfig(model="choi"), dataset, "audio", config)
    meta = train_and_save_audio(
        store.layout, dataset, list(datasets()[dataset].classes), cfg, resolve_device(compute.device)
    )
    return MaterializeResult(metadata=_training_metadata(meta))


@asset(partitions_def=dataset_partitions, group_name=GROUP, deps=_deps(), code_version="1", pool="gpu")
def video_model(
    context: AssetExecutionContext, config: TrainConfig, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """Frame classifier over Inception embeddings: k random frames per video per epoch, SGD, lr halved /5."""
    dataset = context.partition_key
    cfg = _configured(VideoTrainConfig(), dataset, "video", config)
    meta = train_and_save_video(
        store.layout, dataset, list(datasets()[dataset].classes), cfg, resolve_device(compute.device)
    )
    return MaterializeResult(metadata=_training_metadata(meta))


@asset(
    partitions_def=dataset_partitions,
    group_name=GROUP,
    deps=[audio_model, video_model],
    code_version="1",
    pool="gpu",
)
def fusion_model(
    context: AssetExecutionContext, config: TrainConfig, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """The paper's late fusion on (k+1, n) inputs: k frame vectors + 1 audio vector, two FC 1024 + BN."""
    dataset = context.partition_key
    cfg = _configured(FusionTrainConfig(), dataset, "fusion", config)
    meta = train_and_save_fusion(
        store.layout, dataset, list(datasets()[dataset].classes), "choi", cfg, resolve_device(compute.device)
    )
    return MaterializeResult(metadata=_training_metadata(meta))
