"""Ragged per-video arrays in one Zarr group per dataset × split (the CSR convention).

Each modality (``frames``, ``audio_12000``, ``logmel_choi``, ``embeddings`` …) is a sub-group holding
``data`` (all videos' rows concatenated along axis 0), ``offsets`` (n + 1 row boundaries) and
``video_id`` (n ids). Thousands of tiny per-video groups are slow on every filesystem; a few large
chunked arrays are not.

Crash safety comes from the write order: rows are appended to ``data`` first, then the id to
``video_id``, then its end row to ``offsets`` — the commit point. Growing an array and filling the new
cell are two writes, so a killed writer can leave a grown index with an unwritten cell; such cells read
as the fill values (``""`` for ids, ``-1`` for offsets), which no committed entry can hold. On open,
everything past the last complete entry is cut off, so a re-run resumes without duplicates and never reads
a half-written record. Zarr's local store replaces each chunk and metadata file atomically, so a single
write is never torn. Zarr 3 has no locks: one writer per modality at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

#: Target bytes per chunk: large enough for object stores and network filesystems (~1 MB or more).
CHUNK_BYTES = 2 * 1024 * 1024


def params_digest(params: Mapping[str, Any]) -> str:
    """A stable short digest of extraction parameters, so a change is detected and versioned."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def _compressor(dtype: np.dtype) -> BloscCodec:
    """Blosc/zstd (numcodecs' Blosc under zarr's spec codec); byte-shuffle floats, bit-shuffle bytes."""
    shuffle = BloscShuffle.bitshuffle if np.dtype(dtype).itemsize == 1 else BloscShuffle.shuffle
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle, typesize=np.dtype(dtype).itemsize)


class RaggedArray:
    """One modality of a dataset × split: variable-length per-video rows with an id index."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self._reconcile()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        parent: zarr.Group,
        name: str,
        row_shape: tuple[int, ...],
        dtype: np.dtype | str,
        params: Mapping[str, Any],
    ) -> RaggedArray:
        """Open (or create) a modality; a modality built with other parameters is dropped and rebuilt.

        Why drop: rows extracted with other settings (sample rate, crop, weights) must never be mixed
        with new ones, and keeping both would need a second index. The caller re-extracts.
        """
        dtype = np.dtype(dtype)
        digest = params_digest(params)
        if name in parent:
            existing = parent[name]
            attrs = dict(existing.attrs)
            same = (
                attrs.get("params_digest") == digest
                and tuple(attrs.get("row_shape", ())) == tuple(row_shape)
                and attrs.get("dtype") == dtype.str
            )
            if same:
                return cls(existing)
            del parent[name]
        group = parent.create_group(name)
        chunks = (_chunk_rows(row_shape, dtype), *row_shape)
        group.create_array(
            "data", shape=(0, *row_shape), chunks=chunks, dtype=dtype, compressors=[_compressor(dtype)]
        )
        offsets = group.create_array("offsets", shape=(1,), chunks=(65536,), dtype="int64", fill_value=-1)
        offsets[0] = 0
        group.create_array("video_id", shape=(0,), chunks=(65536,), dtype=str, fill_value="")
        group.attrs.update(
            {
                "params": dict(params),
                "params_digest": digest,
                "row_shape": list(row_shape),
                "dtype": dtype.str,
            }
        )
        return cls(group)

    @classmethod
    def read(cls, parent: zarr.Group, name: str) -> RaggedArray:
        """Open an existing modality read-only-ish (no parameter check); KeyError when absent."""
        return cls(parent[name])

    # -- index ----------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        """Cut anything a killed writer left beyond the last complete index entry."""
        ids, offsets, data = self.group["video_id"], self.group["offsets"], self.group["data"]
        all_ids = [str(v) for v in ids[:]]
        all_offsets = np.asarray(offsets[:], dtype=np.int64)
        valid_ids = all_ids.index("") if "" in all_ids else len(all_ids)
        unwritten = np.flatnonzero(all_offsets < 0)
        valid_offsets = int(unwritten[0]) if len(unwritten) else len(all_offsets)
        n = max(0, min(valid_ids, valid_offsets - 1))
        self._ids: list[str] = all_ids[:n]
        self._index = {v: i for i, v in enumerate(self._ids)}
        self._offsets = all_offsets[: n + 1]
        end = int(self._offsets[-1])
        if self.group.read_only:
            return
        if ids.shape[0] != n:
            ids.resize((n,))
        if offsets.shape[0] != n + 1:
            offsets.resize((n + 1,))
        if data.shape[0] != end:
            data.resize((end, *data.shape[1:]))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("params", {}))

    @property
    def params_digest(self) -> str:
        return str(self.group.attrs.get("params_digest", ""))

    @property
    def video_ids(self) -> list[str]:
        return list(self._ids)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._index

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def n_rows(self) -> int:
        return int(self._offsets[-1])

    def row_ranges(self) -> dict[str, tuple[int, int]]:
        """``video_id → (start, stop)`` rows in ``data``."""
        o = self._offsets.tolist()
        return {v: (o[i], o[i + 1]) for i, v in enumerate(self._ids)}

    def lengths(self) -> dict[str, int]:
        return dict(zip(self._ids, np.diff(self._offsets).tolist(), strict=True))

    # -- data -----------------------------------------------------------------------------------
    def get(self, video_id: str) -> np.ndarray:
        i = self._index[video_id]
        return self.group["data"][int(self._offsets[i]) : int(self._offsets[i + 1])]

    def iter_all(self) -> Iterator[tuple[str, np.ndarray]]:
        data = self.group["data"][:]
        for i, v in enumerate(self._ids):
            yield v, data[int(self._offsets[i]) : int(self._offsets[i + 1])]

    def append(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Commit several videos at once: data first, then ids, then offsets (the commit point)."""
        items = [(v, r) for v, r in items if v not in self._index]
        if not items:
            return
        data, offsets, ids = self.group["data"], self.group["offsets"], self.group["video_id"]
        row_shape = tuple(data.shape[1:])
        for v, rows in items:
            if tuple(rows.shape[1:]) != row_shape:
                raise ValueError(f"{v}: rows of shape {rows.shape[1:]}, expected {row_shape}")
        block = np.concatenate([np.asarray(r, dtype=data.dtype) for _, r in items], axis=0)
        start = int(self._offsets[-1])
        if len(block):
            data.resize((start + len(block), *row_shape))
            data[start:] = block
        new_offsets = start + np.cumsum([len(r) for _, r in items], dtype=np.int64)
        n = len(self._ids)
        ids.resize((n + len(items),))
        ids[n:] = np.array([v for v, _ in items], dtype=object)
        offsets.resize((n + 1 + len(items),))
        offsets[n + 1 :] = new_offsets  # the commit point
        for v, _ in items:
            self._index[v] = len(self._ids)
            self._ids.append(v)
        self._offsets = np.concatenate([self._offsets, new_offsets])

    def append_stream(self, video_id: str, chunks: Iterable[np.ndarray]) -> None:
        """Commit one video whose rows arrive in chunks (a long video never sits in memory whole).

        Rows go to ``data`` chunk by chunk; the index is written last, so a crash in between leaves rows
        that the next open cuts off.
        """
        if video_id in self._index:
            return
        data = self.group["data"]
        row_shape = tuple(data.shape[1:])
        end = int(self._offsets[-1])
        for chunk in chunks:
            if tuple(chunk.shape[1:]) != row_shape:
                raise ValueError(f"{video_id}: rows of shape {chunk.shape[1:]}, expected {row_shape}")
            if len(chunk):
                data.resize((end + len(chunk), *row_shape))
                data[end:] = np.asarray(chunk, dtype=data.dtype)
                end += len(chunk)
        if data.shape[0] != end:  # nothing was written: keep ``data`` in step with the index
            data.resize((end, *row_shape))
        n = len(self._ids)
        self.group["video_id"].resize((n + 1,))
        self.group["video_id"][n] = video_id
        self.group["offsets"].resize((n + 2,))
        self.group["offsets"][n + 1] = end  # the commit point
        self._index[video_id] = n
        self._ids.append(video_id)
        self._offsets = np.append(self._offsets, end)

    def data_version(self) -> str:
        """Content identity for Dagster: parameters plus which videos (and how many rows) are stored."""
        h = hashlib.sha256(self.params_digest.encode())
        for v, n in sorted(self.lengths().items()):
            h.update(f"{v}:{n};".encode())
        return h.hexdigest()[:16]


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
