"""Training inputs read from the feature store: per-video log-mels and frame embeddings with labels.

Crops are taken here, not at extraction: UC (segments spread uniformly over the video, predictions
averaged per video) and CC (one central crop), so a change of strategy needs no re-extraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from instrec_pipeline.datasets.labels import encode
from instrec_pipeline.features.logmel import MelParams
from instrec_pipeline.features.partition import logmel_modality_name
from instrec_pipeline.features.store import FeatureStore
from instrec_pipeline.layout import Layout, read_csv


@dataclass
class SplitData:
    """One split of one dataset: ids, labels, and each stored modality keyed by video id.

    Labels are class ids ``(n,)`` or, for a multi-label dataset, a multi-hot ``(n, C)`` float matrix.

    A video missing a modality (no audio track, audio-only file, failed extraction) has no entry in that
    modality's dict — the models see it as missing (zeros in fusion, chance for a unimodal score).
    """

    video_ids: list[str]
    labels: np.ndarray
    audio: dict[str, np.ndarray] = field(default_factory=dict)  # (T, n_mels) log-mel per video
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # (n, 2048) embeddings per video

    def labels_for(self, ids: list[str]) -> np.ndarray:
        """The label rows of ``ids``, in that order."""
        pos = {v: i for i, v in enumerate(self.video_ids)}
        return self.labels[[pos[v] for v in ids]]


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
    embeddings: str = "embeddings",
) -> SplitData:
    """Labels from the partition's manifest table; features from its Zarr group (what exists of them).

    ``embeddings`` names the frame-embedding modality (a fine-tuned Inception writes its own).
    """
    data = SplitData(*manifest_labels(layout, dataset, split, classes, multilabel))
    store: FeatureStore = layout.features
    wanted = set(data.video_ids)
    if mel is not None:
        modality = store.modality(dataset, split, logmel_modality_name(mel))
        data.audio = {v: x for v, x in modality.iter_all() if v in wanted and len(x)}
    frames = store.modality(dataset, split, embeddings)
    data.frames = {v: x for v, x in frames.iter_all() if v in wanted and len(x)}
    return data


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
