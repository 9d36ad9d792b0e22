"""Manifests: per-row rejection with reasons, seeded stratified splits, the paper's lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def _shares(table: pd.DataFrame, column: str = "label") -> pd.DataFrame:
    """Per label (a multi-label video counts for each of its labels): the share of its videos per split."""
    exploded = table.assign(**{column: table[column].str.split(";")}).explode(column)
    counts = exploded.groupby([column, "split"]).size().unstack(fill_value=0)
    return counts.reindex(columns=["train", "val", "test"], fill_value=0).div(counts.sum(axis=1), axis=0)


def test_groups_stay_in_one_split_and_labels_stay_stratified() -> None:
    rng = np.random.default_rng(7)
    classes = ["cello", "flute", "piano", "violin"]
    rows = []
    for g in range(40):  # performers who mostly play one instrument, a few videos each
        for i in range(int(rng.integers(3, 9))):
            label = classes[g % 4] if rng.random() < 0.85 else str(rng.choice(classes))
            rows.append((f"g{g}v{i}", f"g{g}v{i}.mp4", label, "", f"performer{g}"))
    rows += [(f"solo{i}", f"solo{i}.mp4", classes[i % 4], "", "") for i in range(12)]  # groups of one
    table = pd.DataFrame(rows, columns=["video_id", "source", "label", "split", "group"])
    kept, rejected = validate(table, classes)
    assert not rejected and list(kept.columns) == ["video_id", "source", "label", "split", "group"]
    out = assign_splits(kept, seed=3)
    grouped = out[out["group"] != ""]
    assert (grouped.groupby("group")["split"].nunique() == 1).all()
    assert out.loc[out["group"] == "", "split"].nunique() > 1  # empty groups are not one big group
    sizes = out["split"].value_counts(normalize=True)
    assert abs(sizes["train"] - 0.70) < 0.05 and abs(sizes["val"] - 0.15) < 0.05
    assert abs(sizes["test"] - 0.15) < 0.05
    target = pd.Series({"train": 0.70, "val": 0.15, "test": 0.15})
    assert (_shares(out).sub(target).abs() < 0.12).all().all(), _shares(out)
    shuffled = assign_splits(kept.sample(frac=1, random_state=1), seed=3).set_index("video_id")["split"]
    assert (shuffled.reindex(out["video_id"]).to_numpy() == out["split"].to_numpy()).all()


def test_group_rows_follow_a_split_the_group_already_has() -> None:
    rows = [("a", "a.mp4", "cello", "test", "p1"), ("b", "b.mp4", "cello", "", "p1"),
            ("c", "c.mp4", "flute", "", "p1"), ("d", "d.mp4", "flute", "", "")]  # fmt: skip
    table = pd.DataFrame(rows, columns=["video_id", "source", "label", "split", "group"])
    out = assign_splits(validate(table, CLASSES)[0]).set_index("video_id")["split"]
    assert list(out[["a", "b", "c"]]) == ["test"] * 3 and out["d"] in ("train", "val", "test")


def test_multilabel_splits_are_iteratively_stratified() -> None:
    rng = np.random.default_rng(11)
    classes = [f"c{i}" for i in range(10)]
    weights = np.array([40, 25, 15, 10, 8, 5, 4, 3, 2, 1], float)
    rows = []
    for v in range(400):
        labels = rng.choice(classes, size=int(rng.integers(1, 4)), replace=False, p=weights / weights.sum())
        rows.append((f"v{v}", f"v{v}.mp4", ";".join(labels), ""))
    rows += [("r0", "r0.mp4", "c9;c0", ""), ("r1", "r1.mp4", "rare3", ""), ("r2", "r2.mp4", "rare3", ""),
             ("r3", "r3.mp4", "rare3;c1", "")]  # fmt: skip
    kept, _ = validate(_table(rows), [*classes, "rare3"], multilabel=True)
    out = assign_splits(kept, seed=5, multilabel=True)
    shares = _shares(out)
    counts = kept["label"].str.split(";").explode().value_counts()
    assert (shares.loc[counts[counts >= 3].index] > 0).all().all(), shares  # every label in every split
    target = pd.Series({"train": 0.70, "val": 0.15, "test": 0.15})
    common = counts[counts >= 20].index  # where a share can be near its target at all

    def error(split: pd.DataFrame) -> float:
        return float(_shares(split).loc[common].sub(target).abs().to_numpy().mean())

    chance = []
    for s in range(5):  # what an unstratified seeded split does on the same data
        draw = np.random.default_rng(s).choice(["train", "val", "test"], size=len(kept), p=target.to_numpy())
        chance.append(error(kept.assign(split=draw)))
    assert error(out) < 0.5 * min(chance), (error(out), chance)
    big = counts[counts >= 40].index
    assert (shares.loc[big].sub(target).abs() < 0.03).all().all(), shares.loc[big]
    sizes = out["split"].value_counts(normalize=True)
    assert abs(sizes["train"] - 0.70) < 0.05 and abs(sizes["val"] - 0.15) < 0.05
    assert assign_splits(kept, seed=5).equals(out)  # multilabel detected from the ';'


def test_a_rare_class_is_drawn_alone_and_the_others_stay_stratified() -> None:
    classes = ["a", "b", "c", "rare"]
    rows = [(f"{c}{i}", f"{c}{i}.mp4", c, "") for c in classes[:3] for i in range(30)]
    rows += [("rare0", "rare0.mp4", "rare", ""), ("rare1", "rare1.mp4", "rare", "")]
    kept, _ = validate(_table(rows), classes)
    for seed in range(5):
        out = assign_splits(kept, seed=seed)
        counts = out.groupby(["label", "split"]).size().unstack(fill_value=0)
        for c in classes[:3]:
            assert abs(counts.loc[c, "train"] - 21) <= 1, counts
            assert abs(counts.loc[c, "val"] - 4.5) <= 1 and abs(counts.loc[c, "test"] - 4.5) <= 1, counts
        rare = out.loc[out["label"] == "rare", "split"]
        assert rare.nunique() == 2 and "train" in set(rare)
        assert assign_splits(kept, seed=seed).equals(out)
        shuffled = assign_splits(kept.iloc[::-1], seed=seed).set_index("video_id")["split"]
        assert (shuffled.reindex(out["video_id"]).to_numpy() == out["split"].to_numpy()).all()
    sizes = assign_splits(kept, seed=0)["split"].value_counts()
    assert abs(sizes["train"] - 92 * 0.7) <= 1 and abs(sizes["val"] - 92 * 0.15) <= 1


def test_manifest_without_group_keeps_its_columns_and_bad_fractions_fail() -> None:
    kept, _ = validate(_table([("a", "a.mp4", "cello", "")]), CLASSES)
    assert list(kept.columns) == ["video_id", "source", "label", "split"]
    assert assign_splits(kept)["split"].item() == "train"
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(kept, fractions=(0.7, -0.1, 0.4))
