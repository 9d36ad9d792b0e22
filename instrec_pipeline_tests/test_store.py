"""The ragged Zarr store: CSR layout, batched commits, the commit record, resume after a crash."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instrec_pipeline.store import FeatureStore, FrameCodec, Frames, RaggedArray, ragged


def _rows(n: int, value: float) -> np.ndarray:
    return np.full((n, 4), value, np.float32)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 5 rows and 4 index entries: every commit crosses chunk boundaries."""
    monkeypatch.setattr(ragged, "CHUNK_BYTES", 5 * 16)
    monkeypatch.setattr(ragged, "INDEX_CHUNK", 4)


def test_append_commit_and_read_back(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "train")
    with RaggedArray.open(group, "emb", (4,), "float32", {"a": 1}) as arr:
        arr.append([("v1", _rows(3, 1)), ("v2", _rows(0, 0)), ("v3", _rows(2, 3))])
        arr.append([("v3", _rows(5, 9)), ("v4", _rows(1, 4))])  # v3 again: skipped, never duplicated
    again = FeatureStore(tmp_path).modality("d", "train", "emb")
    assert again.video_ids == ["v1", "v2", "v3", "v4"]
    assert again.lengths() == {"v1": 3, "v2": 0, "v3": 2, "v4": 1}
    np.testing.assert_array_equal(again.get("v3"), _rows(2, 3))
    assert dict(again.iter_videos())["v4"].tolist() == [[4, 4, 4, 4]]
    assert group["emb/data"].chunks[0] * 4 * 4 >= 1_000_000  # chunks of at least ~1 MB


def test_uncommitted_videos_are_invisible_and_redone(tmp_path: Path, small_chunks: None) -> None:
    group = FeatureStore(tmp_path).group("d", "train")
    arr = RaggedArray.open(group, "emb", (4,), "float32", {"a": 1})
    arr.append([(f"v{i}", _rows(3, i)) for i in range(6)])
    arr.commit()
    arr.append([(f"v{i}", _rows(3, i)) for i in range(6, 9)])  # written out in part, never committed
    assert "v7" in arr  # the writer sees its own pending videos
    reader = RaggedArray.read(group, "emb")
    assert reader.video_ids == [f"v{i}" for i in range(6)]  # the "killed" writer's videos are not there
    again = RaggedArray.open(group, "emb", (4,), "float32", {"a": 1})
    with again:
        again.append([(f"v{i}", _rows(2, 10 + i)) for i in range(4, 9)])  # v4, v5 skipped; v6-v8 redone
    final = RaggedArray.read(group, "emb")
    assert final.video_ids == [f"v{i}" for i in range(9)]
    np.testing.assert_array_equal(final.get("v5"), _rows(3, 5))
    np.testing.assert_array_equal(final.get("v7"), _rows(2, 17))


def test_garbage_past_the_commit_record_is_ignored(tmp_path: Path, small_chunks: None) -> None:
    group = FeatureStore(tmp_path).group("d", "train")
    with RaggedArray.open(group, "emb", (4,), "float32", {"a": 1}) as arr:
        arr.append([("v1", _rows(3, 1)), ("v2", _rows(4, 2))])
    # A writer killed after writing rows, ids and offsets of a next video, before its commit record:
    for name, value in (("data", 7.0), ("video_id", "v3"), ("offsets", 99)):
        a = group[f"emb/{name}"]
        a.resize((a.shape[0] + 8, *a.shape[1:]))
        a[-8:] = value
    reopened = RaggedArray.open(group, "emb", (4,), "float32", {"a": 1})
    assert reopened.video_ids == ["v1", "v2"] and reopened.n_rows == 7
    with reopened:
        reopened.append([("v3", _rows(2, 3))])
    read = RaggedArray.read(group, "emb")
    assert read.lengths() == {"v1": 3, "v2": 4, "v3": 2}
    np.testing.assert_array_equal(read.get("v3"), _rows(2, 3))
    np.testing.assert_array_equal(read.get("v2"), _rows(4, 2))


def test_commit_policy_and_many_chunk_boundaries(tmp_path: Path, small_chunks: None) -> None:
    group = FeatureStore(tmp_path).group("d", "train")
    arr = RaggedArray.open(group, "emb", (4,), "float32", {})
    arr.commit_videos = 7
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(50):
        expected[f"v{i}"] = rng.normal(size=(int(rng.integers(0, 9)), 4)).astype(np.float32)
        arr.append_stream(f"v{i}", np.array_split(expected[f"v{i}"], 3))
        if i == 20:  # 21 appended: three commits of 7 are visible to another process
            assert len(RaggedArray.read(group, "emb")) == 21
    arr.commit()
    read = RaggedArray.read(group, "emb")
    assert read.video_ids == list(expected)
    for v, rows in read.iter_videos(max_bytes=64):
        np.testing.assert_array_equal(rows, expected[v])


def test_a_failing_stream_adds_nothing(tmp_path: Path, small_chunks: None) -> None:
    group = FeatureStore(tmp_path).group("d", "t")
    arr = RaggedArray.open(group, "emb", (4,), "float32", {})
    arr.append([("v1", _rows(3, 1))])

    def broken():
        yield _rows(6, 5)  # crosses a chunk: written out before the failure
        raise OSError("decoder died")

    with pytest.raises(OSError):
        arr.append_stream("v2", broken())
    arr.append([("v3", _rows(2, 3))])
    arr.commit()
    read = RaggedArray.read(group, "emb")
    assert read.video_ids == ["v1", "v3"]
    np.testing.assert_array_equal(read.get("v3"), _rows(2, 3))


def test_duplicate_ids_in_an_index_are_refused(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "t")
    with RaggedArray.open(group, "emb", (4,), "float32", {}) as arr:
        arr.append([("v1", _rows(1, 1)), ("v2", _rows(1, 2))])
    group["emb/video_id"][1] = "v1"
    with pytest.raises(ValueError, match="duplicate"):
        RaggedArray.read(group, "emb")


def test_changed_parameters_rebuild_and_change_the_version(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "val")
    with RaggedArray.open(group, "emb", (4,), "float32", {"sr": 12000}) as arr:
        arr.append([("v1", _rows(1, 1))])
    version = arr.data_version()
    assert RaggedArray.open(group, "emb", (4,), "float32", {"sr": 12000}).data_version() == version
    rebuilt = RaggedArray.open(group, "emb", (4,), "float32", {"sr": 16000})
    assert len(rebuilt) == 0
    rebuilt.append([("v1", _rows(1, 1))])
    assert rebuilt.data_version() != version


def test_wrong_row_shape_is_refused(tmp_path: Path) -> None:
    arr = RaggedArray.open(FeatureStore(tmp_path).group("d", "t"), "emb", (4,), "float32", {})
    with pytest.raises(ValueError, match="v1"):
        arr.append([("v1", np.zeros((2, 5), np.float32))])
    assert len(arr) == 0


def test_missing_partition_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="materialise"):
        FeatureStore(tmp_path).modality("nope", "train", "frames")


def _pictures(n: int) -> np.ndarray:
    """Smooth, textured 224² pictures (gradients, discs and noise), closer to video frames than noise."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:224, 0:224] / 224.0
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.2, 0.8, 3)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < (r / 3) ** 2).astype(float)
        img = np.stack([xx * rng.uniform(), yy * rng.uniform(), disc], -1) * 200
        img += rng.normal(0, 6, (224, 224, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_jpeg_frames_round_trip_small_and_close(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "t")
    frames = Frames.open(group, 1.0, 256, 224, FrameCodec("jpeg", 90))
    pictures = _pictures(6)
    with frames.array:
        frames.append_stream("v1", [pictures[:4], pictures[4:]])
    back = Frames.read(group).get("v1")
    assert back.shape == pictures.shape and back.dtype == np.uint8
    psnr = 10 * np.log10(255**2 / np.mean((back.astype(float) - pictures) ** 2))
    assert psnr > 30
    encoded = Frames.read(group).array.get("v1")
    assert max(len(b) for b in encoded) <= 20_000
    # imagecodecs' decoder gives Pillow's pixels exactly: stores written before it read the same
    pillow = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded])
    np.testing.assert_array_equal(back, pillow)
    # and its encoder Pillow's bytes: stores written before it hold the same rows
    for picture, row in zip(pictures, encoded, strict=True):
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, "JPEG", quality=90)
        assert buf.getvalue() == row
    raw = Frames.open(FeatureStore(tmp_path).group("d", "u"), 1.0, 256, 224, FrameCodec("raw"))
    with raw.array:
        raw.append_stream("v1", [pictures])
    np.testing.assert_array_equal(Frames.read(FeatureStore(tmp_path).group("d", "u")).get("v1"), pictures)
