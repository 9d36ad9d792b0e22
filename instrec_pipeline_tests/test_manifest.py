"""Manifests: per-row rejection with reasons, seeded stratified splits, the paper's lists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from instrec_pipeline.datasets.manifest import ManifestError, assign_splits, read_table, validate
from instrec_pipeline.datasets.registry import FCVID_CLASSES, YT8M_CLASSES, load_manifest

CLASSES = ["cello", "flute"]


def _table(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video_id", "source", "label", "split"])


def test_bad_rows_are_rejected_with_row_and_reason() -> None:
    table = _table([
        ("a", "a.mp4", "cello", "train"),
        ("b", "b.mp4", "banjo", "train"),  # unknown label
        ("a", "a2.mp4", "flute", "train"),  # duplicate id
        ("../etc", "x.mp4", "flute", "train"),  # escapes a folder
        ("c/d", "x.mp4", "flute", "val"),
        ("e\\f", "x.mp4", "flute", "val"),
        ("", "x.mp4", "flute", "val"),
        ("g", "", "flute", "val"),
        ("h", "h.mp4", "flute", "holdout"),
        ("i", "i.mp4", "flute", "test"),
    ])  # fmt: skip
    kept, rejected = validate(table, CLASSES)
    assert list(kept["video_id"]) == ["a", "i"]
    reasons = {r.row: r.reason for r in rejected}
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 9}
    assert "unknown label 'banjo'" in reasons[2]
    assert "duplicate" in reasons[3]
    assert all("video_id must not" in reasons[r] for r in (4, 5, 6))
    assert "row 2 (b)" in str(rejected[0])


def test_missing_columns_fail_the_whole_manifest() -> None:
    with pytest.raises(ManifestError, match="label"):
        validate(pd.DataFrame({"video_id": ["a"], "source": ["a.mp4"]}), CLASSES)


def test_unreadable_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        read_table(tmp_path / "missing.csv")


def test_splits_are_stratified_seeded_and_keep_given_ones() -> None:
    rows = [(f"{c}{i}", f"{c}{i}.mp4", c, "") for c in CLASSES for i in range(40)]
    rows[0] = ("cello0", "cello0.mp4", "cello", "test")
    table, _ = validate(_table(rows), CLASSES)
    a, b = assign_splits(table, seed=1), assign_splits(table, seed=1)
    assert a.equals(b)
    assert a.loc[a["video_id"] == "cello0", "split"].item() == "test"
    counts = a.groupby(["label", "split"]).size().unstack()
    assert (counts["train"] >= 27).all() and (counts["val"] >= 5).all() and (counts["test"] >= 5).all()
    assert not assign_splits(table, seed=2).equals(a)


def test_paper_lists_load_with_labels_from_folders(tmp_path: Path) -> None:
    fcvid = load_manifest("fcvid", tmp_path)
    assert len(fcvid.table) == 5147 and not fcvid.rejected
    assert set(fcvid.table["label"]) == set(FCVID_CLASSES)
    # The numeric column says 6 (violin) for this id; its folder says violin too — the folder wins anyway.
    assert fcvid.table.set_index("video_id").loc["_iiwx8skEBs", "label"] == "violin"
    assert fcvid.table["source"].str.startswith("yt:").all()
    yt8m = load_manifest("yt8m", tmp_path)
    assert len(yt8m.table) == 60794 and set(yt8m.table["label"]) == set(YT8M_CLASSES)
    shares = yt8m.table.groupby("split").size() / len(yt8m.table)
    assert abs(shares["train"] - 0.70) < 0.01 and abs(shares["test"] - 0.15) < 0.01


def test_user_dataset_from_yaml_with_a_parquet_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instrec_pipeline.datasets import registry

    rows = [(f"v{i}", f"clips/v{i}.mp4", ["cello", "flute"][i % 2], "") for i in range(20)]
    rows.append(("bad", "x.mp4", "tuba", ""))
    _table(rows).to_parquet(tmp_path / "manifest.parquet")
    (tmp_path / "sets.yaml").write_text(
        "datasets:\n  mine:\n    manifest: manifest.parquet\n    media_root: media\n"
        "    classes: [cello, flute]\n    training:\n      audio: {max_epochs: 3}\n"
    )
    monkeypatch.setenv("INSTREC_DATASETS", str(tmp_path / "sets.yaml"))
    registry.datasets.cache_clear()
    try:
        spec = registry.datasets()["mine"]
        assert spec.media_dir(tmp_path / "ignored") == tmp_path / "media"
        assert spec.training["audio"] == {"max_epochs": 3}
        m = load_manifest("mine", tmp_path)
        assert len(m.table) == 20 and [r.video_id for r in m.rejected] == ["bad"]
        assert set(m.table["split"]) == {"train", "val", "test"}
    finally:
        registry.datasets.cache_clear()
