"""Ragged per-video arrays in one Zarr group per dataset × split (the CSR convention), with batched commits.

Each modality (``frames``, ``audio_12000``, ``logmel_choi``, ``embeddings`` …) is a sub-group holding
``data`` (all videos' rows concatenated along axis 0), ``offsets`` (row boundaries) and ``video_id``.
Thousands of tiny per-video groups are slow on every filesystem; a few large chunked arrays are not.

**Cost per video is flat.** A writer keeps the last, partly filled chunk of ``data``, ``video_id`` and
``offsets`` in memory and writes every chunk whole (never a read-modify-write), and it commits many videos
at once (:data:`COMMIT_VIDEOS` or :data:`COMMIT_SECONDS`, whichever comes first). The arrays grow
geometrically, so their metadata is rewritten rarely. Nothing per write depends on how many videos the
store already holds.

**The commit point** is one small attribute of the modality group, ``committed = {videos, rows}``,
written after the chunks it covers (data, then ids, then offsets); Zarr's local store replaces a file
atomically, so it is never torn. Readers see exactly the committed prefix: cells past it (a killed
writer's rows, ids or offsets, or the spare capacity) are ignored and overwritten by the next writer. So a
SIGKILL at any moment leaves no duplicate and no partial record that reads as complete, and a re-run redoes
only the videos that were not yet committed. Zarr has no locks: one writer per modality at a time.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.core.dtype import VariableLengthBytes

# Variable-length bytes (JPEG frames) have no Zarr v3 spec yet; zarr-python reads and writes them fine.
warnings.filterwarnings("ignore", message=r"The data type \(VariableLengthBytes", module="zarr")

#: Bumped when the on-disk layout changes: a modality of another format is rebuilt, never misread.
FORMAT = 2
#: Target bytes per chunk: large enough for object stores and network filesystems (~1 MB or more).
CHUNK_BYTES = 2 * 1024 * 1024
#: Entries per chunk of ``video_id`` and ``offsets``: a commit rewrites at most two such chunks.
INDEX_CHUNK = 8192
#: Commit after this many videos or seconds (what a crash can cost a re-run), whichever comes first.
COMMIT_VIDEOS = 256
COMMIT_SECONDS = 30.0
#: Rows per read when streaming a modality: bounded memory whatever the partition's size.
READ_BYTES = 32 * 1024 * 1024

BYTES = "bytes"  # the dtype name of variable-length byte rows (one encoded frame per row)


def params_digest(params: Mapping[str, Any]) -> str:
    """A stable short digest of extraction parameters, so a change is detected and versioned."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _row_bytes(row_shape: tuple[int, ...], dtype: str, row_bytes: int | None) -> int:
    if row_bytes:
        return row_bytes
    return int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _compressors(dtype: str) -> list[BloscCodec]:
    """Blosc (numcodecs' Blosc under zarr's spec codec): lz4 on byte-shuffled floats, zstd on bit-shuffled
    bytes (raw frames); encoded rows (JPEG) are already compressed: no second codec.

    Why lz4 for floats: audio and log-mels barely compress (measured on music: zstd-3 keeps 82 % of the
    bytes, lz4 86 %), while zstd-3 compressed at ~290 MB/s, which is 8 % of the ffmpeg pass on the
    decode path (audio is written as each video is demuxed); lz4 writes at ~1.3 GB/s and reads 2–3×
    faster too (log-mels are read every training epoch).
    """
    if dtype == BYTES:
        return []
    size = np.dtype(dtype).itemsize
    if size == 1:
        return [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle, typesize=size)]
    return [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle, typesize=size)]


def _whole_chunks(array: zarr.Array) -> zarr.Array:
    """``array`` set to store every chunk it is given: this writer writes only chunks it has filled, and
    Zarr's default first compares each with the fill value (to skip empty ones), which cost as much CPU as
    lz4-compressing it — on the cores that decode the videos."""
    return array.with_config({"write_empty_chunks": True})


def _grow(array: zarr.Array, needed: int) -> None:
    """Grow axis 0 to at least ``needed``: whole chunks, by a quarter at least (rare metadata writes)."""
    have = array.shape[0]
    if needed <= have:
        return
    chunk = array.chunks[0]
    target = max(needed, have + have // 4)
    array.resize((-(-target // chunk) * chunk, *array.shape[1:]))


class _Tail:
    """The last, partly filled chunk of one array, kept in memory so every chunk is written whole."""

    def __init__(self, array: zarr.Array, start: int, rows: list[np.ndarray]) -> None:
        self.array, self.start, self.rows = array, start, rows
        self.size = sum(len(r) for r in rows)

    @property
    def chunk(self) -> int:
        return self.array.chunks[0]

    def add(self, rows: np.ndarray) -> None:
        """Append rows, writing out every chunk they complete."""
        self.rows.append(rows)
        self.size += len(rows)
        while self.size >= self.chunk:
            block = np.concatenate(self.rows)
            self._write(block[: self.chunk])
            rest = block[self.chunk :]
            self.start += self.chunk
            self.rows, self.size = ([rest] if len(rest) else []), len(rest)

    def flush(self) -> None:
        """Write the partial chunk (padded to a whole one); it stays in memory for the next rows."""
        if self.size:
            block = np.concatenate(self.rows)
            self.rows = [block]
            pad = np.full((self.chunk - len(block), *block.shape[1:]), self.array.fill_value, block.dtype)
            self._write(np.concatenate([block, pad]))

    def truncate(self, end: int) -> None:
        """Forget the rows from ``end`` on; rows before it that were already written out are read back."""
        if end >= self.start:
            block = np.concatenate(self.rows)[: end - self.start] if self.rows else None
            self.rows = [block] if block is not None and len(block) else []
        else:
            self.start = end - end % self.chunk
            self.rows = [self.array[self.start : end]] if end > self.start else []
        self.size = end - self.start

    def _write(self, block: np.ndarray) -> None:
        _grow(self.array, self.start + self.chunk)
        self.array[self.start : self.start + self.chunk] = block


class RaggedArray:
    """One modality of a dataset × split: variable-length per-video rows with an id index.

    Reads see the committed videos plus, in the writing process, those appended since (committed on
    :meth:`commit`, by the commit policy, or when a ``with`` block ends).
    """

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        committed = dict(group.attrs.get("committed", {"videos": 0, "rows": 0}))
        # Opened once (each lookup re-reads Zarr's metadata), and after the commit record: the arrays have
        # grown to cover it before it was written.
        self.data: zarr.Array = _whole_chunks(group["data"])
        n, rows = int(committed["videos"]), int(committed["rows"])
        self._ids: list[str] = [str(v) for v in group["video_id"][:n]] if n else []
        self._offsets: list[int] = [int(x) for x in group["offsets"][: n + 1]] if n else [0]
        if len(self._ids) != n or self._offsets[-1] != rows:
            raise ValueError(f"{group.path}: index shorter than its commit record {committed}")
        self._index = {v: i for i, v in enumerate(self._ids)}
        if len(self._index) != n:
            raise ValueError(f"{group.path}: duplicate video ids in the index")
        self._committed = n
        self._tails: tuple[_Tail, _Tail, _Tail] | None = None
        self._last_commit = time.monotonic()
        self.commit_videos, self.commit_seconds = COMMIT_VIDEOS, COMMIT_SECONDS

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        parent: zarr.Group,
        name: str,
        row_shape: tuple[int, ...],
        dtype: np.dtype | str,
        params: Mapping[str, Any],
        *,
        row_bytes: int | None = None,
    ) -> RaggedArray:
        """Open (or create) a modality for writing; one built with other parameters is dropped and rebuilt.

        Why drop: rows extracted with other settings (sample rate, crop, weights) must never be mixed
        with new ones, and keeping both would need a second index. The caller re-extracts.
        ``dtype`` ``"bytes"`` stores one variable-length byte string per row (``row_bytes`` sizes chunks).
        """
        dtype = BYTES if dtype == BYTES else np.dtype(dtype).str
        digest = params_digest(params)
        if name in parent:
            attrs = dict(parent[name].attrs)
            same = (
                attrs.get("format") == FORMAT
                and attrs.get("params_digest") == digest
                and tuple(attrs.get("row_shape", ())) == tuple(row_shape)
                and attrs.get("dtype") == dtype
            )
            if same:
                return cls(parent[name])
            del parent[name]
        group = parent.create_group(name)
        chunk_rows = max(1, CHUNK_BYTES // max(1, _row_bytes(row_shape, dtype, row_bytes)))
        group.create_array(
            "data",
            shape=(0, *row_shape),
            chunks=(chunk_rows, *row_shape),
            dtype=VariableLengthBytes() if dtype == BYTES else dtype,
            compressors=_compressors(dtype),
        )
        group.create_array("offsets", shape=(0,), chunks=(INDEX_CHUNK,), dtype="int64", fill_value=-1)
        group.create_array("video_id", shape=(0,), chunks=(INDEX_CHUNK,), dtype=str, fill_value="")
        group.attrs.update(
            {
                "format": FORMAT,
                "params": dict(params),
                "params_digest": digest,
                "row_shape": list(row_shape),
                "dtype": dtype,
                "committed": {"videos": 0, "rows": 0},
            }
        )
        return cls(group)

    @classmethod
    def read(cls, parent: zarr.Group, name: str) -> RaggedArray:
        """Open an existing modality (no parameter check); KeyError when absent."""
        return cls(parent[name])

    def __enter__(self) -> RaggedArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.commit()  # what was appended whole is complete, even when the caller stops on an error

    # -- index ----------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("params", {}))

    @property
    def params_digest(self) -> str:
        return str(self.group.attrs.get("params_digest", ""))

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    @property
    def video_ids(self) -> list[str]:
        return list(self._ids)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._index

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def n_rows(self) -> int:
        return self._offsets[-1]

    def span(self, video_id: str) -> tuple[int, int]:
        """``(start, stop)`` rows of one video in ``data``."""
        i = self._index[video_id]
        return self._offsets[i], self._offsets[i + 1]

    def row_ranges(self) -> dict[str, tuple[int, int]]:
        """``video_id → (start, stop)`` rows in ``data``."""
        o = self._offsets
        return {v: (o[i], o[i + 1]) for i, v in enumerate(self._ids)}

    def lengths(self) -> dict[str, int]:
        o = self._offsets
        return {v: o[i + 1] - o[i] for i, v in enumerate(self._ids)}

    # -- data -----------------------------------------------------------------------------------
    def get(self, video_id: str) -> np.ndarray:
        """One video's rows (read from its chunks only)."""
        return self.rows(*self.span(video_id))

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``data`` (committing first if they are still in this writer's buffer)."""
        if stop > self._offsets[self._committed]:
            self.commit()
        return self.data[start:stop]

    def iter_videos(
        self, video_ids: Iterable[str] | None = None, max_bytes: int = READ_BYTES
    ) -> Iterator[tuple[str, np.ndarray]]:
        """``(id, rows)`` for the given videos (default: all, in store order), reading neighbouring videos
        in one slice of at most ``max_bytes`` (a longer video is read alone): memory stays bounded and each
        chunk is decompressed about once."""
        wanted = self._ids if video_ids is None else [v for v in video_ids if v in self._index]
        spans = sorted((self.span(v), v) for v in wanted)
        data = self.data
        item = 16_384 if data.dtype == object else data.dtype.itemsize  # encoded rows: a JPEG's size
        row_bytes = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * item)
        limit = max(1, max_bytes // row_bytes)
        i = 0
        while i < len(spans):
            j, (start, stop) = i + 1, spans[i][0]
            while j < len(spans) and spans[j][0][1] - start <= limit and spans[j][0][0] - stop <= limit // 4:
                stop = spans[j][0][1]
                j += 1
            block = self.rows(start, stop)
            for (a, b), v in spans[i:j]:
                yield v, block[a - start : b - start]
            i = j

    def append(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Add whole videos (ids already stored are skipped, never duplicated)."""
        for video_id, rows in items:
            self.append_stream(video_id, [rows])

    def append_stream(self, video_id: str, chunks: Iterable[np.ndarray]) -> None:
        """Add one video whose rows arrive in chunks (a long video never sits in memory whole).

        Rows are written as whole chunks fill; the video becomes visible to other readers at the next
        commit. A failure while its chunks arrive adds nothing to the index.
        """
        if video_id in self._index:
            return
        data, ids, offsets = self._writer_tails()
        end = self._offsets[-1]
        try:
            for chunk in chunks:
                if tuple(chunk.shape[1:]) != self.row_shape:
                    shape = chunk.shape[1:]
                    raise ValueError(f"{video_id}: rows of shape {shape}, expected {self.row_shape}")
                if len(chunk):
                    data.add(np.asarray(chunk, dtype=self.data.dtype))
                    end += len(chunk)
        except BaseException:
            data.truncate(self._offsets[-1])  # the next video's rows start where the index ends
            raise
        self._index[video_id] = len(self._ids)
        self._ids.append(video_id)
        self._offsets.append(end)
        ids.add(np.array([video_id], dtype=object))
        offsets.add(np.array([end], dtype=np.int64))
        if self._due():
            self.commit()

    def _due(self) -> bool:
        pending = len(self._ids) - self._committed
        waited = time.monotonic() - self._last_commit
        return pending >= self.commit_videos or (pending > 0 and waited >= self.commit_seconds)

    def _writer_tails(self) -> tuple[_Tail, _Tail, _Tail]:
        """The in-memory last chunks, loaded from the committed state on the first write."""
        if self._tails is None:
            g, n, rows = self.group, self._committed, self._offsets[self._committed]
            d0 = rows - rows % self.data.chunks[0]
            i0 = n - n % g["video_id"].chunks[0]  # ids 0..n-1
            o0 = (n + 1) - (n + 1) % g["offsets"].chunks[0]  # offsets 0..n
            self._tails = (
                _Tail(self.data, d0, [self.data[d0:rows]] if rows > d0 else []),
                _Tail(_whole_chunks(g["video_id"]), i0, [np.array(self._ids[i0:n], dtype=object)]),
                _Tail(_whole_chunks(g["offsets"]), o0, [np.array(self._offsets[o0 : n + 1], dtype=np.int64)]),
            )
        return self._tails

    def commit(self) -> None:
        """Make every appended video durable and visible: data, ids, offsets, then the commit record."""
        n = len(self._ids)
        if n == self._committed or self._tails is None:
            return
        for tail in self._tails:
            tail.flush()
        self.group.attrs["committed"] = {"videos": n, "rows": self._offsets[-1]}  # the commit point
        self._committed = n
        self._last_commit = time.monotonic()

    def data_version(self) -> str:
        """Content identity for Dagster: parameters plus which videos (and how many rows) are stored."""
        h = hashlib.sha256(self.params_digest.encode())
        for v, n in sorted(self.lengths().items()):
            h.update(f"{v}:{n};".encode())
        return h.hexdigest()[:16]
