"""What the store holds, by name: the modalities, the parameters that identify them, and the frame codec.

One place decides how a modality is named and which parameters make it (a change of any re-extracts it);
the stages hand arrays over and never build Zarr arrays themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import imagecodecs
import numpy as np
import zarr

from instrec_pipeline.store.lock import exclusive
from instrec_pipeline.store.ragged import BYTES, RaggedArray

FRAMES = "frames"
EMBEDDINGS = "embeddings"
FINETUNED_EMBEDDINGS = "embeddings_finetuned"  # embeddings of a fine-tuned Inception v3


def audio_modality_name(sample_rate: int) -> str:
    return f"audio_{sample_rate}"


def logmel_modality_name(mel_name: str) -> str:
    return f"logmel_{mel_name}"


@dataclass(frozen=True)
class FrameCodec:
    """How frames are kept: ``jpeg`` (default, ~10–20 KB a 224² frame) or ``raw`` RGB (150 KB).

    Why JPEG: raw frames of YouTube-8M would take 2.25 TB, and only Inception (embedding, fine-tuning)
    reads them; at quality 90 the embeddings move far less than between two adjacent frames.
    """

    kind: Literal["jpeg", "raw"] = "jpeg"
    quality: int = 90

    def __post_init__(self) -> None:
        if self.kind not in ("jpeg", "raw"):
            raise ValueError(f"frames codec must be 'jpeg' or 'raw', got {self.kind!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")

    def as_dict(self) -> dict[str, Any]:
        return {"codec": self.kind, **({"quality": self.quality} if self.kind == "jpeg" else {})}

    def bytes_per_frame(self, crop: int) -> int:
        """For sizing chunks and disk estimates (JPEG: a typical natural 224² frame at q90 is ~15 KB)."""
        raw = crop * crop * 3
        return raw if self.kind == "raw" else max(2048, raw // 10)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """``(n, H, W, 3)`` uint8 → the rows to store.

        imagecodecs' libjpeg-turbo: byte for byte Pillow's JPEG at the same quality and 4:2:0 (tested), in
        a third less CPU, spent on the cores that decode the videos.
        """
        if self.kind == "raw":
            return frames
        out = np.empty(len(frames), dtype=object)
        for i, frame in enumerate(frames):
            out[i] = imagecodecs.jpeg8_encode(frame, level=self.quality, subsampling="420")
        return out

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Stored rows → ``(n, H, W, 3)`` uint8 (the frames the models see).

        imagecodecs' libjpeg-turbo, each frame decoded straight into the batch: the same pixels as Pillow's
        (tested) in ~0.2 ms a frame, half Pillow's — CPU that the Inception forward running beside the
        reading thread would otherwise lose.
        """
        if rows.dtype != object:
            return np.asarray(rows)
        if not len(rows):
            return np.zeros((0, 0, 0, 3), np.uint8)
        first = imagecodecs.jpeg8_decode(rows[0])
        out = np.empty((len(rows), *first.shape), np.uint8)
        out[0] = first
        for i in range(1, len(rows)):
            imagecodecs.jpeg8_decode(rows[i], out=out[i])
        return out


class Frames:
    """The ``frames`` modality with its codec: encodes on the way in, decodes on the way out."""

    def __init__(self, array: RaggedArray) -> None:
        self.array = array
        p = array.params
        self.codec = FrameCodec(p.get("codec", "raw"), int(p.get("quality", 90)))

    @classmethod
    def open(
        cls,
        group: zarr.Group,
        fps: float,
        resize: int,
        crop: int,
        codec: FrameCodec,
        *,
        geometry: str = "squash",
        decoder: str = "ffmpeg",
    ) -> Frames:
        """The partition's frames modality for these parameters (emptied first if they differ).

        ``geometry`` (``squash`` | ``shorter_side``, see :class:`~instrec_pipeline.media.demux.DemuxParams`)
        is recorded with the rest: a change of it changes the parameters' digest, so the frames (and the
        embeddings made from them) are re-extracted, and reports show which geometry made them. Stores
        written before it was recorded hold ``shorter_side`` frames and no ``geometry`` key. ``decoder``
        (``DemuxParams.frames_decoder``) is recorded when it is not ffmpeg, so ffmpeg's stores keep their
        digest.
        """
        params = {
            "fps": fps, "resize": resize, "crop": crop, "geometry": geometry, "layout": "HWC RGB uint8",
            **codec.as_dict(), **({"decoder": decoder} if decoder != "ffmpeg" else {}),
        }  # fmt: skip
        if codec.kind == "raw":
            array = RaggedArray.open(group, FRAMES, (crop, crop, 3), "uint8", params)
        else:
            array = RaggedArray.open(group, FRAMES, (), BYTES, params, row_bytes=codec.bytes_per_frame(crop))
        return cls(array)

    @classmethod
    def read(cls, group: zarr.Group) -> Frames:
        return cls(RaggedArray.read(group, FRAMES))

    def get(self, video_id: str) -> np.ndarray:
        return self.codec.decode(self.array.get(video_id))

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.codec.decode(self.array.rows(start, stop))

    def append_stream(self, video_id: str, chunks: Iterable[np.ndarray]) -> None:
        encoded: Iterator[np.ndarray] = (self.codec.encode(c) for c in chunks)
        self.array.append_stream(video_id, encoded)


def open_audio(group: zarr.Group, sample_rate: int) -> RaggedArray:
    return RaggedArray.open(
        group, audio_modality_name(sample_rate), (), "float32",
        {"sample_rate": sample_rate, "channels": "mono (mean of channels)", "resampler": "soxr"},
    )  # fmt: skip


class FeatureStore:
    """The store root: ``<root>/features/<dataset>/<split>.zarr``, one Zarr group per partition."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def group_path(self, dataset: str, split: str) -> Path:
        return self.root / "features" / dataset / f"{split}.zarr"

    def group(self, dataset: str, split: str, mode: str = "a") -> zarr.Group:
        path = self.group_path(dataset, split)
        if mode == "r" and not path.exists():
            raise FileNotFoundError(f"no features for {dataset}/{split} at {path}: materialise them first")
        path.parent.mkdir(parents=True, exist_ok=True)
        return zarr.open_group(str(path), mode=mode)

    def lock(
        self, dataset: str, split: str, holder: str, wait_s: float = 0.0
    ) -> AbstractContextManager[None]:
        """The partition's writer lock (see :mod:`instrec_pipeline.store.lock`)."""
        return exclusive(self.root / "features" / dataset / f"{split}.lock", holder, wait_s)

    def modality(self, dataset: str, split: str, name: str) -> RaggedArray:
        return RaggedArray.read(self.group(dataset, split, mode="r"), name)

    def record_failures(self, dataset: str, split: str, stage: str, failures: Mapping[str, str]) -> None:
        """Keep the per-video failures of a stage beside its data (id → reason), replacing the last run's."""
        g = self.group(dataset, split)
        all_failures = dict(g.attrs.get("failures", {}))
        all_failures[stage] = dict(failures)
        g.attrs["failures"] = all_failures

    def failures(self, dataset: str, split: str, stage: str) -> dict[str, str]:
        path = self.group_path(dataset, split)
        if not path.exists():
            return {}
        return dict(self.group(dataset, split, mode="r").attrs.get("failures", {}).get(stage, {}))
