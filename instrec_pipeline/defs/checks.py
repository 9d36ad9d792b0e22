"""Partitioned asset checks guarding the extracted data; blocking where a bad result must stop the graph."""

import zarr
from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from instrec_pipeline.datasets.registry import datasets
from instrec_pipeline.defs.assets.videos import SAMPLE_RATES
from instrec_pipeline.defs.partitions import dataset_split_partitions, split_key
from instrec_pipeline.defs.resources import StoreResource
from instrec_pipeline.features import quality
from instrec_pipeline.features.logmel import MEL_INPUTS
from instrec_pipeline.features.visual import EMBEDDING_DIM
from instrec_pipeline.settings import CheckSettings
from instrec_pipeline.store import EMBEDDINGS, FRAMES, RaggedArray, audio_modality_name, logmel_modality_name
from instrec_pipeline.store.layout import read_csv


def _stored(context: AssetCheckExecutionContext, store: StoreResource) -> zarr.Group:
    """The checked partition's Zarr group, read-only."""
    dataset, split = split_key(context.partition_key)
    return store.layout.features.group(dataset, split, mode="r")


def _result(finding: quality.Finding) -> AssetCheckResult:
    return AssetCheckResult(passed=finding.passed, description=finding.reason, metadata=finding.figures)


@asset_check(
    asset="manifest",
    partitions_def=dataset_split_partitions,
    blocking=True,
    description="The train split holds every class of the dataset (val and test pass trivially).",
)
def train_split_covers_every_class(
    context: AssetCheckExecutionContext, store: StoreResource
) -> AssetCheckResult:
    """A class missing from train cannot be learned, and the report would score it as never predicted."""
    dataset, split = split_key(context.partition_key)
    if split != "train":
        return AssetCheckResult(passed=True, description=f"{split}: not required")
    table = read_csv(store.layout.table(dataset, split, "manifest"))
    return _result(quality.classes_covered(table, list(datasets()[dataset].classes)))


@asset_check(
    asset="demux",
    partitions_def=dataset_split_partitions,
    blocking=True,
    description="Every manifest video is stored or reported failed, and the failed share stays under "
    "$INSTREC_MAX_FAILED_RATIO (default 0.2).",
)
def videos_accounted_for(context: AssetCheckExecutionContext, store: StoreResource) -> AssetCheckResult:
    """A partition that silently lost videos would train and report on another dataset than its manifest."""
    dataset, split = split_key(context.partition_key)
    layout = store.layout
    table = read_csv(layout.table(dataset, split, "manifest"))
    failures = layout.features.failures(dataset, split, "demux")
    group = layout.features.group(dataset, split, mode="r")
    return _result(quality.demux_coverage(table, group, failures, CheckSettings.read().max_failed_ratio))


@asset_check(
    asset="demux",
    partitions_def=dataset_split_partitions,
    blocking=True,
    description="Every audio modality holds exactly the frames' videos, once each.",
)
def modalities_hold_the_same_videos(
    context: AssetCheckExecutionContext, store: StoreResource
) -> AssetCheckResult:
    """Modalities out of step would pair one video's audio with another's frames in fusion."""
    group = _stored(context, store)
    return _result(quality.same_videos(group, [audio_modality_name(r) for r in SAMPLE_RATES]))


@asset_check(
    asset="demux",
    partitions_def=dataset_split_partitions,
    description="Each video's frames (at its fps) and audio span the same duration.",
)
def frames_and_audio_agree(context: AssetCheckExecutionContext, store: StoreResource) -> AssetCheckResult:
    """Advisory (not blocking): a mismatch hints at a truncated decode; both modalities stay usable."""
    group = _stored(context, store)
    fps = RaggedArray.read(group, FRAMES).params["fps"]
    return _result(quality.durations_agree(group, fps, SAMPLE_RATES[0]))


@asset_check(
    asset="log_mel",
    partitions_def=dataset_split_partitions,
    blocking=True,
    description="Each log-mel input is (frames, n_mels) float32 without NaN or Inf, for the same videos.",
)
def log_mel_shapes_and_values(context: AssetCheckExecutionContext, store: StoreResource) -> AssetCheckResult:
    """A NaN in one spectrogram poisons every batch it lands in."""
    group = _stored(context, store)
    mels = list(MEL_INPUTS.values())
    names = [logmel_modality_name(m.name) for m in mels]
    findings = [quality.rows_valid(group, n, m.n_mels) for n, m in zip(names, mels, strict=True)]
    findings.append(quality.same_videos(group, names))
    bad = [f for f in findings if not f.passed]
    figures = {f"{m}_{k}": v for m, f in zip([*MEL_INPUTS, "index"], findings, strict=True)
               for k, v in f.figures.items()}  # fmt: skip
    return AssetCheckResult(passed=not bad, description="; ".join(f.reason for f in bad or findings),
                            metadata=figures)  # fmt: skip


@asset_check(
    asset="frame_embeddings",
    partitions_def=dataset_split_partitions,
    blocking=True,
    description="Embeddings are 2048-d float32, finite, exactly one per stored frame.",
)
def embeddings_shapes_and_values(
    context: AssetCheckExecutionContext, store: StoreResource
) -> AssetCheckResult:
    """The video model reads one embedding per stored frame; a short or non-finite row corrupts its inputs."""
    group = _stored(context, store)
    frames = RaggedArray.read(group, FRAMES).lengths()
    rows = quality.rows_valid(group, EMBEDDINGS, EMBEDDING_DIM, frames)
    return _result(rows if not rows.passed else quality.same_videos(group, [EMBEDDINGS]))


@asset_check(
    asset="frame_embeddings",
    partitions_def=dataset_split_partitions,
    blocking=True,
    description="Datasets compared with the paper (fcvid, yt8m) have embeddings from ImageNet (or a given "
    "file's) weights, never random init.",
)
def embeddings_from_pretrained_weights(
    context: AssetCheckExecutionContext, store: StoreResource
) -> AssetCheckResult:
    """Random-init embeddings would make the paper comparison meaningless while still training fine."""
    group = _stored(context, store)
    params = RaggedArray.read(group, EMBEDDINGS).params
    dataset = split_key(context.partition_key)[0]
    required = datasets()[dataset].inception_weights
    meta = {"weights": params.get("weights", ""), "weights_digest": params.get("weights_digest", "")}
    if required != "auto" and params.get("weights") == "random":
        return AssetCheckResult(
            passed=False, metadata=meta,
            description=f"{dataset} needs {required} Inception weights; these embeddings are from random "
            "init: make the weights available offline (README: Inception weights) and re-materialise",
        )  # fmt: skip
    return AssetCheckResult(passed=True, metadata=meta, description=f"weights: {params.get('weights')}")
