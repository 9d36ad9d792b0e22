"""log_mel and frame_embeddings: per dataset × split, from the demuxed audio and frames."""

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from instrec_pipeline.datasets.registry import datasets
from instrec_pipeline.defs.assets.common import (
    EXTRACTION_STAGE,
    GPU_STAGE,
    partition,
    progress,
    rate_metadata,
    writing,
)
from instrec_pipeline.defs.resources import ComputeResource, ExtractionResource, StoreResource
from instrec_pipeline.features.logmel import MEL_INPUTS
from instrec_pipeline.features.partition import embedding_partition, logmel_partition
from instrec_pipeline.features.visual import FrameEmbedder, resolve_device
from instrec_pipeline.store import params_digest

GROUP = "features"


@asset(
    group_name=GROUP,
    **EXTRACTION_STAGE,
    deps=["demux"],
    kinds={"pytorch", "zarr"},
    **GPU_STAGE,
)
def log_mel(
    context: AssetExecutionContext, store: StoreResource, compute: ComputeResource
) -> MaterializeResult:
    """Log-mel spectrograms (torchaudio, librosa-compatible) for the Choi and Han inputs, whole videos."""
    dataset, split = partition(context)
    with writing(context, store):
        group = store.layout.features.group(dataset, split)
        device = str(resolve_device(compute.device))
        metadata: dict[str, object] = {"device": device}
        versions = []
        for mel in MEL_INPUTS.values():
            p = progress(context, f"log_mel {mel.name}")
            target, summary = logmel_partition(group, mel, device, p)
            p.finish()
            metadata.update({f"{mel.name}_{k}": v for k, v in p.metadata().items()})
            metadata["dagster/row_count"] = len(target)
            metadata[f"{mel.name}_processed"] = summary.processed
            metadata[f"{mel.name}_skipped"] = summary.skipped
            metadata[f"{mel.name}_frames"] = target.n_rows
            metadata[f"{mel.name}_params"] = MetadataValue.json(target.params)
            versions.append(target.data_version())
        return MaterializeResult(metadata=metadata, data_version=DataVersion(params_digest({"v": versions})))


@asset(
    group_name=GROUP,
    **EXTRACTION_STAGE,
    deps=["demux"],
    kinds={"pytorch", "zarr"},
    **GPU_STAGE,
)
def frame_embeddings(
    context: AssetExecutionContext,
    store: StoreResource,
    compute: ComputeResource,
    extraction: ExtractionResource,
) -> MaterializeResult:
    """Inception v3 penultimate (2048-d) embeddings of every frame, eval mode, batched across videos."""
    dataset, split = partition(context)
    with writing(context, store):
        group = store.layout.features.group(dataset, split)
        weights = extraction.inception_weights
        if weights == "auto":
            weights = datasets()[dataset].inception_weights
        embedder = FrameEmbedder(
            weights, compute.device, compute.batch_size, extraction.seed, compute.precision, compute.runtime
        )
        if embedder.weights.kind == "random":
            context.log.warning("Inception v3 runs with RANDOM weights: ImageNet weights could not be loaded")
        p = progress(context, "frame_embeddings")
        target, summary = embedding_partition(group, embedder, progress=p)
        p.finish()
        return MaterializeResult(
            metadata={
                **rate_metadata(p, len(target)),
                "frames_per_s": round(summary.rows / max(p.elapsed_s, 1e-9), 2),
                "processed": summary.processed,
                "skipped": summary.skipped,
                "frames": target.n_rows,
                "device": str(embedder.device),
                "precision": embedder.precision,
                "runtime": embedder.runtime,
                "weights": embedder.weights.kind,
                "weights_source": embedder.weights.source,
                "params": MetadataValue.json(target.params),
            },
            data_version=DataVersion(target.data_version()),
        )
