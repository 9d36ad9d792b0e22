"""Compute a feature for every stored video of a partition that lacks it, committing in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr

from instrec_pipeline.features.logmel import MelParams, log_mel
from instrec_pipeline.features.store import RaggedArray
from instrec_pipeline.features.visual import EMBEDDING_DIM, FrameEmbedder, LoadedWeights
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


def _row_pieces(source: RaggedArray, video_ids: list[str], rows: int) -> list[tuple[str, int, int, bool]]:
    """``(video, start, stop, last)`` spans of at most ``rows`` rows covering the given videos in order."""
    bounds = source.row_ranges()
    pieces = []
    for vid in video_ids:
        a, b = bounds[vid]
        for s in range(a, max(b, a + 1), rows):
            pieces.append((vid, s, min(s + rows, b), min(s + rows, b) >= b))
    return pieces


def _blocks(pieces: list[tuple[str, int, int, bool]], rows: int) -> list[list[tuple[str, int, int, bool]]]:
    """Group consecutive spans into blocks of about ``rows`` rows (one inference batch each)."""
    blocks: list[list[tuple[str, int, int, bool]]] = [[]]
    filled = 0
    for piece in pieces:
        if filled and filled + piece[2] - piece[1] > rows:
            blocks.append([])
            filled = 0
        blocks[-1].append(piece)
        filled += piece[2] - piece[1]
    return [b for b in blocks if b]


def embedding_params(w: LoadedWeights, source: RaggedArray) -> dict[str, str]:
    """What identifies stored embeddings: the model, its weights and the frames they came from."""
    return {
        "model": "inception_v3",
        "layer": "avgpool (penultimate, 2048-d)",
        "weights": w.kind,
        "weights_source": w.source,
        "weights_digest": w.digest,
        "source": source.params_digest,
    }


def inception_weights_of(params: dict[str, str]) -> str:
    """The ``weights`` argument that rebuilds the Inception v3 behind stored embeddings."""
    return {"imagenet": "imagenet", "random": "random"}.get(params["weights"], params["weights_source"])


def embedding_partition(
    group: zarr.Group, embedder: FrameEmbedder, name: str = "embeddings"
) -> tuple[RaggedArray, StageSummary]:
    """Inception v3 embeddings of every stored frame, in batches that span videos, into modality ``name``.

    Embeddings map 1:1 onto frames, so the frames are read as contiguous row blocks of one batch each
    (a long video never sits in memory whole, short ones share a batch); a reader thread decompresses the
    next block while the model runs on this one.
    """
    source = RaggedArray.read(group, "frames")
    params = embedding_params(embedder.weights, source)
    target = RaggedArray.open(group, name, (EMBEDDING_DIM,), "float32", params)
    summary = StageSummary(skipped=sum(v in target for v in source.video_ids))
    todo = [v for v in source.video_ids if v not in target]
    blocks = _blocks(_row_pieces(source, todo, embedder.batch_size), embedder.batch_size)
    data = source.group["data"]

    def read(block: list[tuple[str, int, int, bool]]) -> np.ndarray:
        return np.concatenate([data[a:b] for _, a, b, _ in block])

    parts: list[np.ndarray] = []
    done: list[tuple[str, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, blocks[0]) if blocks else None
        for i, block in enumerate(blocks):
            frames = pending.result()
            pending = reader.submit(read, blocks[i + 1]) if i + 1 < len(blocks) else None
            emb = embedder.embed(frames)
            pos = 0
            for vid, a, b, last in block:
                parts.append(emb[pos : pos + b - a])
                pos += b - a
                if last:
                    done.append((vid, np.concatenate(parts)))
                    parts = []
            if len(done) >= COMMIT_VIDEOS:
                target.append(done)
                summary.processed += len(done)
                done = []
    target.append(done)
    summary.processed += len(done)
    return target, summary
