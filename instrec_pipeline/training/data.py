"""Training inputs read from the feature store: per-video log-mels and frame embeddings with labels.

Nothing here reads a whole modality: a split's features are :class:`StoredRows` (read on demand, in
blocks of neighbouring videos), and training draws its samples through :class:`BlockStream`, whose memory
is bounded by a budget whatever the dataset's size.

Crops are taken here, not at extraction: UC (segments spread uniformly over the video, predictions
averaged per video) and CC (one central crop), so a change of strategy needs no re-extraction.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from instrec_pipeline.datasets.labels import encode
from instrec_pipeline.features.logmel import MelParams
from instrec_pipeline.store import EMBEDDINGS, FeatureStore, RaggedArray, logmel_modality_name
from instrec_pipeline.store.layout import Layout, read_csv

#: Bytes per block, the unit a DataLoader worker reads (neighbouring videos in one slice).
BLOCK_BYTES = 16 << 20


class StoredRows(Mapping[str, np.ndarray]):
    """One modality of one split, read on demand: ``video_id → rows`` for the videos that have rows."""

    def __init__(self, array: RaggedArray, wanted: set[str]) -> None:
        self.array = array
        self.lengths = array.lengths()
        self._ids = [v for v in array.video_ids if v in wanted and self.lengths[v]]
        self._set = set(self._ids)

    def __getitem__(self, video_id: str) -> np.ndarray:
        if video_id not in self._set:
            raise KeyError(video_id)
        return self.array.get(video_id)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def nbytes(rows: Mapping[str, np.ndarray], video_id: str, row_bytes: int) -> int:
    """A video's stored size, known without reading it when the rows are stored."""
    if isinstance(rows, StoredRows):
        return rows.lengths[video_id] * row_bytes
    return int(rows[video_id].nbytes)


def iter_rows(rows: Mapping[str, np.ndarray], ids: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, rows)`` for the ``ids`` that have rows, in that order; stored rows are read in blocks."""
    if not isinstance(rows, StoredRows):
        yield from ((v, rows[v]) for v in ids if v in rows)
        return
    row_bytes = int(np.prod(rows.array.row_shape, dtype=np.int64)) * 4
    part: list[str] = []
    held = 0
    for v in [*(v for v in ids if v in rows), None]:
        if v is None or (part and held + rows.lengths[v] * row_bytes > BLOCK_BYTES):
            got = dict(rows.array.iter_videos(part, BLOCK_BYTES))
            yield from ((p, got[p]) for p in part)
            part, held = [], 0
        if v is not None:
            part.append(v)
            held += rows.lengths[v] * row_bytes


@dataclass
class SplitData:
    """One split of one dataset: ids, labels, and each stored modality keyed by video id.

    Labels are class ids ``(n,)`` or, for a multi-label dataset, a multi-hot ``(n, C)`` float matrix.

    A video missing a modality (no audio track, audio-only file, failed extraction) has no entry in that
    modality's dict — the models see it as missing (zeros in fusion, chance for a unimodal score).
    """

    video_ids: list[str]
    labels: np.ndarray
    audio: Mapping[str, np.ndarray] = field(default_factory=dict)  # (T, n_mels) log-mel per video
    frames: Mapping[str, np.ndarray] = field(default_factory=dict)  # (n, 2048) embeddings per video

    def labels_for(self, ids: list[str]) -> np.ndarray:
        """The label rows of ``ids``, in that order."""
        pos = {v: i for i, v in enumerate(self.video_ids)}
        return self.labels[[pos[v] for v in ids]]

    def subset(self, ids: list[str]) -> SplitData:
        """The same stored rows seen through ``ids`` only (a fold of train for cross-fitting)."""
        return SplitData(list(ids), self.labels_for(ids), self.audio, self.frames)


def manifest_labels(
    layout: Layout, dataset: str, split: str, classes: list[str], multilabel: bool
) -> tuple[list[str], np.ndarray]:
    """The partition's video ids (manifest order) and their encoded labels."""
    table = read_csv(layout.table(dataset, split, "manifest"))
    return list(table["video_id"]), encode(list(table["label"]), classes, multilabel)


def load_split(
    layout: Layout,
    dataset: str,
    split: str,
    classes: list[str],
    mel: MelParams | None,
    multilabel: bool = False,
    embeddings: str = EMBEDDINGS,
) -> SplitData:
    """Labels from the partition's manifest table; features from its Zarr group, read on demand.

    ``embeddings`` names the frame-embedding modality (a fine-tuned Inception writes its own).
    """
    data = SplitData(*manifest_labels(layout, dataset, split, classes, multilabel))
    store: FeatureStore = layout.features
    wanted = set(data.video_ids)
    if mel is not None:
        data.audio = StoredRows(store.modality(dataset, split, logmel_modality_name(mel.name)), wanted)
    data.frames = StoredRows(store.modality(dataset, split, embeddings), wanted)
    return data


class _Blocks(torch.utils.data.Dataset):
    """Block ``i`` → the transformed rows of its videos: what a DataLoader worker reads and prepares."""

    def __init__(
        self,
        rows: Mapping[str, np.ndarray],
        blocks: list[list[str]],
        transform: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.rows, self.blocks, self.transform = rows, blocks, transform

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> list[np.ndarray]:
        return [self.transform(x) for _, x in iter_rows(self.rows, self.blocks[i])]


class _Order(torch.utils.data.Sampler[int]):
    """The current epoch's block order of a stream (persistent workers read it anew each epoch)."""

    def __init__(self, stream: BlockStream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[int]:
        return iter(self.stream._order)

    def __len__(self) -> int:
        return len(self.stream._order)


class BlockStream:
    """The videos of a split as shuffled windows of bounded memory, for one training epoch at a time.

    Videos are grouped in manifest order into blocks of about :data:`BLOCK_BYTES` (neighbours in the
    store, so a block is a few chunk-aligned slices: chunk-aware). When the whole split fits in
    ``budget`` bytes it is read once, kept, and handed over as one window in manifest order, so sampling
    is exactly that of an in-memory split. Otherwise each epoch visits the blocks in a seeded random
    order, ``budget`` bytes at a time (the shuffle window); ``workers`` DataLoader processes read and
    transform the next blocks while the model trains on this window.
    """

    def __init__(
        self,
        rows: Mapping[str, np.ndarray],
        ids: list[str],
        transform: Callable[[np.ndarray], np.ndarray],
        cost: Callable[[str], int],
        budget: int,
        workers: int,
    ) -> None:
        self.ids = [v for v in ids if v in rows]
        self.position = {v: i for i, v in enumerate(self.ids)}
        self.blocks: list[list[str]] = [[]]
        filled = total = 0
        for v in self.ids:
            c = cost(v)
            if self.blocks[-1] and filled + c > BLOCK_BYTES:
                self.blocks.append([])
                filled = 0
            self.blocks[-1].append(v)
            filled += c
            total += c
        self.blocks = [b for b in self.blocks if b]
        self.fits = total <= budget
        self.window = max(1, budget // BLOCK_BYTES)
        self.dataset = _Blocks(rows, self.blocks, transform)
        self.workers = 0 if self.fits else workers
        self._cache: list[tuple[int, np.ndarray]] | None = None
        self._order: list[int] = []
        self._loader: torch.utils.data.DataLoader | None = None

    def _read(self, order: list[int]) -> Iterator[tuple[list[str], list[np.ndarray]]]:
        if not self.workers:
            yield from ((self.blocks[i], self.dataset[i]) for i in order)
            return
        if self._loader is None:  # workers started once, kept across epochs; the order is read per epoch
            self._loader = torch.utils.data.DataLoader(
                self.dataset, sampler=_Order(self), batch_size=None, num_workers=self.workers,
                prefetch_factor=2, persistent_workers=True,
                multiprocessing_context=multiprocessing.get_context("spawn"),  # never fork zarr's I/O thread
            )  # fmt: skip
        self._order = order
        yield from zip((self.blocks[i] for i in order), self._loader, strict=True)

    def close(self) -> None:
        """Stop the worker processes (they are kept across epochs)."""
        self._loader = None

    def epoch(self, rng: np.random.Generator) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Windows of ``(position in ids, transformed rows)``; all of them at once when the split fits."""
        if self.fits:
            if self._cache is None:
                self._cache = [
                    (self.position[v], x)
                    for ids, xs in self._read(list(range(len(self.blocks))))
                    for v, x in zip(ids, xs, strict=True)
                ]
            yield self._cache
            return
        window: list[tuple[int, np.ndarray]] = []
        held = 0
        for ids, xs in self._read(rng.permutation(len(self.blocks)).tolist()):
            window.extend((self.position[v], x) for v, x in zip(ids, xs, strict=True))
            held += 1
            if held >= self.window:
                yield window
                window, held = [], 0
        if window:
            yield window


def uniform_crops(logmel: np.ndarray, n_segments: int, frames: int, floor: float | None = None) -> np.ndarray:
    """UC: ``n_segments`` crops of ``frames`` spread uniformly over ``(T, n_mels)`` → ``(n, n_mels, frames)``.

    A video shorter than one crop is padded with its own floor (the quietest value, i.e. silence in dB);
    one shorter than all crops gets overlapping ones, so every video yields the same count.
    """
    t = logmel.shape[0]
    floor = float(logmel.min()) if floor is None and t else (floor or 0.0)
    if t < frames:
        logmel = np.concatenate([logmel, np.full((frames - t, logmel.shape[1]), floor, logmel.dtype)])
        t = frames
    starts = np.linspace(0, t - frames, n_segments).round().astype(int)
    return np.stack([logmel[s : s + frames].T for s in starts])


def central_crop(logmel: np.ndarray, frames: int) -> np.ndarray:
    """CC: the central ``frames`` of the video → ``(1, n_mels, frames)``."""
    t = logmel.shape[0]
    start = max(0, (t - frames) // 2)
    return uniform_crops(logmel[start : start + frames], 1, frames)


def sample_frames(n: int, k: int, rng: np.random.Generator | None) -> np.ndarray:
    """``k`` frame indices of ``n``: random (repeats only when ``n < k``) or, without rng, uniform."""
    if rng is None:
        return np.linspace(0, n - 1, k).round().astype(int)
    return rng.choice(n, size=k, replace=n < k)
