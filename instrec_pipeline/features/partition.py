"""Fill one partition's store: demux every fetched video, then derive log-mels and embeddings from it.

Each stage skips what the store already holds and commits in batches (see :mod:`instrec_pipeline.store`),
so a crash loses at most the videos since the last commit and a re-run skips every committed one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from instrec_pipeline.features.logmel import MelParams, log_mel
from instrec_pipeline.features.visual import EMBEDDING_DIM, FrameEmbedder, LoadedWeights
from instrec_pipeline.media.demux import DemuxParams, Spooled, demux_to_spool
from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.partition import StageSummary
from instrec_pipeline.parallel import demux_plan, frame_readers, map_unordered
from instrec_pipeline.progress import Progress
from instrec_pipeline.store import (
    EMBEDDINGS,
    FrameCodec,
    Frames,
    RaggedArray,
    audio_modality_name,
    logmel_modality_name,
    open_audio,
)


def _tick(progress: Progress | None) -> None:
    if progress is not None:
        progress.step()


def demux_partition(
    raw: pd.DataFrame,
    group: zarr.Group,
    params: DemuxParams,
    pool: Executor,
    spool_root: Path,
    codec: FrameCodec | None = None,
    progress: Progress | None = None,
) -> StageSummary:
    """Demux every fetched video not yet in the store: frames at ``params.fps`` and mono audio per rate.

    Workers run ffmpeg and park each result on local disk (:func:`demux_to_spool`); this thread, the
    store's only writer, copies it in bounded chunks. Memory stays at a few chunks per worker whatever the
    videos' lengths. A video without audio stores zero audio samples (a missing modality downstream), an
    audio-only file zero frames; one that ffmpeg cannot read is recorded with its reason and retried on
    the next run. ``codec``: how frames are kept (default JPEG, see :class:`FrameCodec`). Unless
    ``params.threads`` says otherwise, each ffmpeg gets the cores a local pool's workers leave it
    (:func:`~instrec_pipeline.parallel.demux_plan`).

    The caller holds the partition's lock: ``spool_root`` is this partition's alone, and whatever a killed
    run left there is removed first.
    """
    codec = codec or FrameCodec()
    local = getattr(pool, "_max_workers", None)  # a local pool (a Dask cluster's workers are elsewhere)
    if not params.threads and local:
        params = replace(params, threads=demux_plan(workers=local).threads)  # no core left oversubscribed
    frames = Frames.open(group, params.fps, params.resize, params.crop, codec, geometry=params.geometry,
                         decoder=params.frames_decoder)  # fmt: skip
    audio = {sr: open_audio(group, sr) for sr in params.sample_rates}
    summary = StageSummary()
    todo = []
    for vid, path, error in zip(raw["video_id"], raw["raw_path"], raw["error"], strict=True):
        if error:
            summary.failed[vid] = f"not fetched: {error}"
        elif vid in frames.array and all(vid in a for a in audio.values()):
            summary.skipped += 1
        else:
            todo.append((vid, path))
    if progress is not None:
        progress.total = len(todo)
    shutil.rmtree(spool_root, ignore_errors=True)
    spool_root.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, str]) -> tuple[Spooled | str, Path]:
        """In a worker: ffmpeg into the spool, the frames JPEG-encoded as they arrive (~0.2 ms a frame),
        which would otherwise queue on the partition's single writer."""
        spool = Path(tempfile.mkdtemp(prefix="demux-", dir=spool_root))
        try:
            encode = None if codec.kind == "raw" else codec.encode
            return demux_to_spool(Path(item[1]), params, spool, encode=encode), spool
        except MediaError as exc:
            return exc.reason, spool
        except Exception as exc:  # keep the partition going; the reason is reported per video
            return f"{type(exc).__name__}: {exc}", spool

    try:
        for (vid, _), (result, spool) in map_unordered(pool, one, todo):
            try:
                if isinstance(result, str):
                    summary.failed[vid] = result
                    continue
                for sr, modality in audio.items():
                    modality.append_stream(vid, result.audio_chunks(sr))
                # rows already in the codec's form (raw frames are their own rows)
                frames.array.append_stream(vid, result.frame_chunks())
                summary.processed += 1
            finally:
                shutil.rmtree(spool, ignore_errors=True)
                _tick(progress)
    finally:
        # Audio first, frames last: ``frames`` is the index the skip test reads first.
        for modality in (*audio.values(), frames.array):
            modality.commit()
    return summary


def _derive(
    source: RaggedArray,
    target: RaggedArray,
    compute: Callable[[Iterator[tuple[str, np.ndarray]]], Iterator[tuple[str, np.ndarray]]],
    progress: Progress | None,
) -> StageSummary:
    """Run ``compute`` over the source videos missing from ``target`` and append its results."""
    summary = StageSummary(skipped=sum(v in target for v in source.video_ids))
    todo = [v for v in source.video_ids if v not in target]
    if progress is not None:
        progress.total = len(todo)
    with target:
        for vid, rows in compute(source.iter_videos(todo)):
            target.append_stream(vid, [rows])
            summary.processed += 1
            _tick(progress)
    return summary


def logmel_partition(
    group: zarr.Group, mel: MelParams, device: str, progress: Progress | None = None
) -> tuple[RaggedArray, StageSummary]:
    """Log-mel of every video's audio at ``mel.sample_rate`` (empty audio → zero frames, kept as missing)."""
    source = RaggedArray.read(group, audio_modality_name(mel.sample_rate))
    params = {**mel.as_dict(), "source": source.params_digest, "library": "torchaudio (librosa-compatible)"}
    target = RaggedArray.open(group, logmel_modality_name(mel.name), (mel.n_mels,), "float32", params)

    def compute(videos: Iterator[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
        for vid, audio in videos:
            yield vid, log_mel(audio, mel, device)

    return target, _derive(source, target, compute, progress)


#: A batch's worth of stored frame rows: ``(video, start, stop, last)`` spans (see :func:`batch_blocks`).
Block = list[tuple[str, int, int, bool]]


def batch_blocks(source: RaggedArray, video_ids: list[str], rows: int) -> list[Block]:
    """The videos' rows cut into blocks of exactly ``rows`` rows (the last may be short), each a list of
    ``(video, start, stop, last)`` spans: a video is split where a block fills, so every inference batch
    is full (a short batch costs nearly a full one's time, and a change of batch shape re-plans the
    network) whatever the videos' lengths."""
    blocks: list[Block] = [[]]
    filled = 0
    for vid in video_ids:
        a, b = source.span(vid)
        while True:
            stop = min(b, a + rows - filled)
            blocks[-1].append((vid, a, stop, stop >= b))
            filled += stop - a
            if filled == rows:
                blocks.append([])
                filled = 0
            if stop >= b:
                break
            a = stop
    return [block for block in blocks if block]


def frame_batches(frames: Frames, blocks: list[Block], readers: int = 1) -> Iterator[np.ndarray]:
    """Each block's stored frames decoded into one uint8 NHWC batch, in order, ``readers`` threads each
    reading one block ahead of the consumer (libjpeg-turbo releases the GIL, so they decode in parallel
    beside it). A block's stored rows are gathered first (a few KB each), then decoded straight into its
    batch."""

    def read(block: Block) -> np.ndarray:
        spans = [frames.array.rows(a, b) for _, a, b, _ in block if b > a]
        return frames.codec.decode(np.concatenate(spans)) if spans else np.zeros((0, 0, 0, 3), np.uint8)

    with ThreadPoolExecutor(max_workers=readers) as pool:
        ahead = deque(pool.submit(read, block) for block in blocks[:readers])
        for block in blocks[readers:]:
            batch = ahead.popleft().result()
            ahead.append(pool.submit(read, block))
            yield batch
        while ahead:
            yield ahead.popleft().result()


def embedding_params(
    w: LoadedWeights, source: RaggedArray, precision: str, runtime: str = "torch"
) -> dict[str, str | int]:
    """What identifies stored embeddings: the model, its weights, its arithmetic (precision, and the runtime
    when not torch: stores made before the setting keep their digest) and the frames they came from."""
    return {
        "model": "inception_v3",
        "layer": "avgpool (penultimate, 2048-d)",
        "weights": w.kind,
        "weights_source": w.source,
        "weights_digest": w.digest,
        **({"seed": w.seed} if w.kind == "random" else {}),
        "precision": precision,
        **({"runtime": runtime} if runtime != "torch" else {}),
        "source": source.params_digest,
    }


def inception_weights_of(params: dict[str, str | int]) -> tuple[str, int]:
    """The ``weights`` and ``seed`` arguments that rebuild the Inception v3 behind stored embeddings."""
    kind = str(params["weights"])
    weights = kind if kind in ("imagenet", "random") else str(params["weights_source"])
    return weights, int(params.get("seed", 0))


def embedding_partition(
    group: zarr.Group,
    embedder: FrameEmbedder,
    name: str = EMBEDDINGS,
    progress: Progress | None = None,
    readers: int | None = None,
) -> tuple[RaggedArray, StageSummary]:
    """Inception v3 embeddings of every stored frame, in batches that span videos, into modality ``name``.

    Embeddings map 1:1 onto frames, so the frames are read as contiguous row blocks of one batch each
    (a long video never sits in memory whole, short ones share a batch); ``readers`` threads (default
    :func:`~instrec_pipeline.parallel.frame_readers` for the embedder's device) read and decode the next
    blocks while the model runs on this one.
    """
    readers = readers or frame_readers(embedder.device.type)
    frames = Frames.read(group)
    source = frames.array
    params = embedding_params(embedder.weights, source, embedder.precision, embedder.runtime)
    target = RaggedArray.open(group, name, (EMBEDDING_DIM,), "float32", params)
    summary = StageSummary(skipped=sum(v in target for v in source.video_ids))
    todo = [v for v in source.video_ids if v not in target]
    if progress is not None:
        progress.total = len(todo)
    blocks = batch_blocks(source, todo, embedder.batch_size)
    parts: list[np.ndarray] = []
    with target, closing(frame_batches(frames, blocks, readers)) as batches:
        for block, emb in zip(blocks, embedder.embed_batches(batches), strict=True):
            summary.rows += len(emb)
            pos = 0
            for vid, a, b, last in block:
                parts.append(emb[pos : pos + b - a])
                pos += b - a
                if last:
                    target.append_stream(vid, parts)
                    parts = []
                    summary.processed += 1
                    _tick(progress)
    return target, summary
