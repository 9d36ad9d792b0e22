"""Compute a feature for every stored video of a partition that lacks it, committing in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import zarr

from instrec_pipeline.features.logmel import MelParams, log_mel
from instrec_pipeline.features.store import RaggedArray
from instrec_pipeline.features.visual import EMBEDDING_DIM, FrameEmbedder
from instrec_pipeline.media.partition import StageSummary, audio_modality_name

COMMIT_VIDEOS = 64


def _derive(
    source: RaggedArray,
    target: RaggedArray,
    compute: Callable[[Iterator[tuple[str, np.ndarray]]], Iterator[tuple[str, np.ndarray]]],
) -> StageSummary:
    """Run ``compute`` over the source videos missing from ``target`` and append its results."""
    summary = StageSummary(skipped=sum(v in target for v in source.video_ids))
    todo = [v for v in source.video_ids if v not in target]

    def inputs() -> Iterator[tuple[str, np.ndarray]]:
        for vid in todo:
            yield vid, source.get(vid)

    batch: list[tuple[str, np.ndarray]] = []
    for vid, rows in compute(inputs()):
        batch.append((vid, rows))
        summary.processed += 1
        if len(batch) >= COMMIT_VIDEOS:
            target.append(batch)
            batch = []
    target.append(batch)
    return summary


def logmel_modality_name(mel: MelParams) -> str:
    return f"logmel_{mel.name}"


def logmel_partition(group: zarr.Group, mel: MelParams, device: str) -> tuple[RaggedArray, StageSummary]:
    """Log-mel of every video's audio at ``mel.sample_rate`` (empty audio → zero frames, kept as missing)."""
    source = RaggedArray.read(group, audio_modality_name(mel.sample_rate))
    params = {**mel.as_dict(), "source": source.params_digest, "library": "torchaudio (librosa-compatible)"}
    target = RaggedArray.open(group, logmel_modality_name(mel), (mel.n_mels,), "float32", params)

    def compute(videos: Iterator[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
        for vid, audio in videos:
            yield vid, log_mel(audio, mel, device)

    return target, _derive(source, target, compute)


def embedding_partition(group: zarr.Group, embedder: FrameEmbedder) -> tuple[RaggedArray, StageSummary]:
    """Inception v3 embeddings of every stored frame, batched across videos."""
    source = RaggedArray.read(group, "frames")
    w = embedder.weights
    params = {
        "model": "inception_v3",
        "layer": "avgpool (penultimate, 2048-d)",
        "weights": w.kind,
        "weights_source": w.source,
        "weights_digest": w.digest,
        "source": source.params_digest,
    }
    target = RaggedArray.open(group, "embeddings", (EMBEDDING_DIM,), "float32", params)
    return target, _derive(source, target, embedder.embed_videos)
