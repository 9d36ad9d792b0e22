"""The ragged Zarr store: CSR layout, batched commits, resume after a torn write, parameter changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instrec_pipeline.features.store import FeatureStore, RaggedArray


def _rows(n: int, value: float) -> np.ndarray:
    return np.full((n, 4), value, np.float32)


def test_append_and_read_back(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "train")
    arr = RaggedArray.open(group, "emb", (4,), "float32", {"a": 1})
    arr.append([("v1", _rows(3, 1)), ("v2", _rows(0, 0)), ("v3", _rows(2, 3))])
    arr.append([("v3", _rows(5, 9)), ("v4", _rows(1, 4))])  # v3 again: skipped, never duplicated
    again = FeatureStore(tmp_path).modality("d", "train", "emb")
    assert again.video_ids == ["v1", "v2", "v3", "v4"]
    assert again.lengths() == {"v1": 3, "v2": 0, "v3": 2, "v4": 1}
    np.testing.assert_array_equal(again.get("v3"), _rows(2, 3))
    assert dict(again.iter_all())["v4"].tolist() == [[4, 4, 4, 4]]
    assert group["emb/data"].chunks[0] * 4 * 4 >= 1_000_000  # chunks of at least ~1 MB


def test_a_torn_write_is_cut_on_reopen(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "train")
    arr = RaggedArray.open(group, "emb", (4,), "float32", {"a": 1})
    arr.append([("v1", _rows(3, 1))])
    # A writer killed after writing rows and growing both index arrays, before filling the offsets cell
    # (the commit point) — and, for the video after it, after growing the ids only:
    group["emb/data"].resize((7, 4))
    group["emb/data"][3:] = 7
    group["emb/video_id"].resize((3,))
    group["emb/video_id"][1] = "v2"
    group["emb/offsets"].resize((3,))
    assert group["emb/offsets"][2] == -1 and group["emb/video_id"][2] == ""
    reopened = RaggedArray.open(group, "emb", (4,), "float32", {"a": 1})
    assert reopened.video_ids == ["v1"] and reopened.n_rows == 3
    assert group["emb/data"].shape == (3, 4)
    reopened.append([("v2", _rows(2, 2))])
    np.testing.assert_array_equal(RaggedArray.read(group, "emb").get("v2"), _rows(2, 2))


def test_changed_parameters_rebuild_and_change_the_version(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path).group("d", "val")
    arr = RaggedArray.open(group, "emb", (4,), "float32", {"sr": 12000})
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
