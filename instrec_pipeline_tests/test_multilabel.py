"""The multi-label path (the AugLi setting): label fields, metrics against hand-computed cases, sigmoid
training, and the whole Dagster graph on a multi-label copy of the tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from instrec_pipeline.datasets.labels import class_counts, encode, is_multilabel, split_labels
from instrec_pipeline.datasets.manifest import validate
from instrec_pipeline.evaluation.multilabel import (
    label_confusion,
    multilabel_per_class,
    multilabel_score,
    tune_thresholds,
)
from instrec_pipeline.store.layout import Layout
from instrec_pipeline.training.data import SplitData
from instrec_pipeline.training.video import VideoTrainConfig, train_video, video_probs

# Four videos, two labels. Class 0: positives score .9 and .6, negatives .4 and .2 → ROC-AUC 1, AP 1.
# Class 1: positives .8 and .15, negatives .2 and .1 → pairs won 3 of 4 (ROC-AUC .75);
# ranked .8 P, .2 N, .15 P → AP = .5·1 + .5·(2/3) = 5/6.
Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
P = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.15], [0.2, 0.1]])


def test_label_fields() -> None:
    assert split_labels(" guitar ; rock;;guitar") == ["guitar", "rock"]
    assert is_multilabel(["cello", "flute;piano"]) and not is_multilabel(["cello", "flute"])
    hot = encode(["flute;cello", "piano"], ["cello", "flute", "piano"], multilabel=True)
    np.testing.assert_array_equal(hot, [[1, 1, 0], [0, 0, 1]])
    assert encode(["piano", "cello"], ["cello", "flute", "piano"], multilabel=False).tolist() == [2, 0]
    counts = class_counts(pd.Series(["flute;cello", "cello"]), ["cello", "flute", "piano"])
    assert counts.to_dict() == {"cello": 2, "flute": 1, "piano": 0}


def test_multilabel_manifest_rows() -> None:
    table = pd.DataFrame(
        [
            ("a", "a.mp4", "flute; cello", "train"),
            ("b", "b.mp4", "cello;banjo;kazoo", "train"),
            ("c", "c.mp4", " ; ", "train"),
            ("d", "d.mp4", "piano", "val"),
        ],
        columns=["video_id", "source", "label", "split"],
    )
    kept, rejected = validate(table, ["cello", "flute", "piano"], multilabel=True)
    assert kept["label"].tolist() == ["cello;flute", "piano"]  # one spelling per label set, class order
    reasons = {r.video_id: r.reason for r in rejected}
    assert reasons == {"b": "unknown labels 'banjo', 'kazoo'", "c": "empty label"}
    # The same field in a single-label dataset is one unknown label, not silently the first one.
    _, rejected = validate(table.iloc[:1], ["cello", "flute", "piano"])
    assert "unknown label 'flute; cello'" in rejected[0].reason


def test_metrics_against_hand_computed_values() -> None:
    s = multilabel_score(Y, P, np.array([0.5, 0.5]))
    assert s.roc_auc_macro == pytest.approx((1 + 0.75) / 2)
    assert s.pr_auc_macro == pytest.approx((1 + 5 / 6) / 2)
    # At 0.5: class 0 hits both (F1 1); class 1 hits one of two, no false positive (F1 2/3).
    assert s.f1_macro == pytest.approx((1 + 2 / 3) / 2)
    assert s.f1_micro == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))  # TP 3, FP 0, FN 1
    table = multilabel_per_class(Y, P, np.array([0.5, 0.5]), ["a", "b"])
    assert table["roc_auc"].tolist() == pytest.approx([1.0, 0.75])
    assert table["support"].tolist() == [2, 2]
    # Rows: true label, columns: predicted label. Video 2 carries both and gets only label 0.
    np.testing.assert_array_equal(label_confusion(Y, P, np.array([0.5, 0.5])), [[2, 0], [1, 1]])


def test_thresholds_maximise_val_f1_per_class() -> None:
    # Class 0: any threshold in (.4, .6] separates it; the PR curve's is .6. Class 1: .15 catches both
    # positives at one false positive (F1 .8), better than .8 (F1 2/3).
    np.testing.assert_allclose(tune_thresholds(Y, P), [0.6, 0.15])
    # A class with no positive (or no negative) on val keeps 0.5 and has no AUC.
    y = Y.copy()
    y[:, 1] = 0
    np.testing.assert_allclose(tune_thresholds(y, P), [0.6, 0.5])
    s = multilabel_score(y, P, np.array([0.5, 0.5]))
    assert s.roc_auc_macro == pytest.approx(1.0)  # class 1 left out of the macro mean, not counted as 0


def _tagged(n: int, seed: int) -> SplitData:
    """Frames carry label 0 in the first feature block and label 1 in the second; any subset may be on."""
    rng = np.random.default_rng(seed)
    hot = np.array([[i % 2, (i // 2) % 2] for i in range(n)], np.float32)
    frames = {}
    for i in range(n):
        x = rng.normal(size=(5, 2048))
        x[:, :512] += 2 * hot[i, 0]
        x[:, 512:1024] += 2 * hot[i, 1]
        frames[f"v{i}"] = x.astype(np.float32)
    return SplitData([f"v{i}" for i in range(n)], hot, frames=frames)


def test_sigmoid_training_learns_label_sets_and_is_reproducible() -> None:
    train, val = _tagged(16, 0), _tagged(8, 1)
    cfg = VideoTrainConfig(k=4, lr=0.01, lr_search=(), max_epochs=6, patience=3, seed=3, multilabel=True)
    runs = [train_video(train, val, 2, cfg, torch.device("cpu")) for _ in range(2)]
    assert runs[0][2].history == runs[1][2].history and "val_pr_auc" in runs[0][2].history
    probs = video_probs(runs[0][0], val, runs[0][1], 2, torch.device("cpu"), multilabel=True)
    assert not np.allclose(probs.sum(1), 1.0)  # independent sigmoids, not a softmax
    # Videos with both labels and with none are both possible outputs, and they are right.
    np.testing.assert_array_equal(probs >= 0.5, val.labels.astype(bool))


def test_a_user_dataset_is_multilabel_when_its_manifest_says_so(tmp_path: Path) -> None:
    from instrec_pipeline.datasets.registry import _user_specs

    (tmp_path / "one.csv").write_text("video_id,source,label\na,a.mp4,cello\nb,b.mp4,flute\n")
    (tmp_path / "many.csv").write_text("video_id,source,label\na,a.mp4,cello;flute\nb,b.mp4,piano\n")
    (tmp_path / "d.yaml").write_text(
        "datasets:\n  one: {manifest: one.csv}\n  many: {manifest: many.csv}\n"
        "  forced: {manifest: one.csv, multilabel: true}\n"
    )
    specs, problems = _user_specs(tmp_path / "d.yaml", set())
    assert not problems
    assert not specs["one"].multilabel and specs["many"].multilabel and specs["forced"].multilabel
    assert specs["many"].classes == ("cello", "flute", "piano")  # labels found, split and sorted


@pytest.fixture(scope="module")
def tags_layout(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The ``tiny_tags`` dataset (conftest): tiny's videos with instrument-family tags, all assets."""
    from dagster import DagsterInstance

    from instrec_pipeline.cli import materialize_dataset

    root = tmp_path_factory.mktemp("store_tags")
    materialize_dataset("tiny_tags", root, DagsterInstance.ephemeral())
    return Layout(root)


def test_the_graph_trains_and_reports_a_multilabel_dataset(tags_layout: Layout) -> None:
    from instrec_pipeline.training.loop import load_checkpoint
    from instrec_pipeline.training.runs import replicate
    from instrec_pipeline_tests.conftest import TAGS_CLASSES

    tags_report = tags_layout.report_dir("tiny_tags")
    summary = pd.read_csv(tags_report / "summary.csv").set_index("model")
    print(summary[["roc_auc_macro", "pr_auc_macro", "f1_micro", "f1_macro", "n"]].round(3).to_string())
    rows = {
        "han",
        "choi",
        "choi_icmr",
        "xception",
        "video",
        "fusion",
        "fusion_insample",
        "score_average",
        "fusion_no_audio",
        "fusion_no_video",
    }
    assert set(summary.index) == rows
    assert {"roc_auc_macro", "pr_auc_macro", "f1_micro", "f1_macro"} <= set(summary.columns)
    assert "hit1" not in summary.columns
    # Instruments and their families are audible: far above a random ranking (ROC-AUC 0.5).
    assert summary.loc["han", "roc_auc_macro"] >= 0.75
    thresholds = pd.read_csv(tags_report / "thresholds.csv", index_col="model")
    assert list(thresholds.columns) == list(TAGS_CLASSES) and set(thresholds.index) == rows
    assert ((thresholds >= 0) & (thresholds <= 1)).all().all()  # 0 = always on (the best val F1 for "wind")
    md = (tags_report / "report.md").read_text()
    assert "PR-AUC macro" in md and "tuned on the val split" in md and "data:image/png;base64," in md
    # `seeds: 2`: every model trained twice (seed replicate 1 fuses its own nets); mean ± sd per row.
    assert (summary["seeds"] == 2).all() and (summary["seeds_sd"] >= 0).all()
    assert "## Over seeds" in md and "over 2 seeds" in md
    for name in ("audio_han", "video", "fusion"):
        assert tags_layout.model("tiny_tags", replicate(1) + name).exists()
    # `inputs: holdout`: one pair trained on the rest of train, the fusion on the held-out fifth.
    fusion = load_checkpoint(tags_layout.model("tiny_tags", "fusion"))["meta"]
    n_train = len(pd.read_csv(tags_layout.table("tiny_tags", "train", "manifest")))
    assert len(fusion["members"]) == 1 and fusion["n_train_videos"] == -(-n_train // 5)  # sklearn: ceil


def test_predict_names_a_label_set(tags_layout: Layout, tiny_dataset: Path) -> None:
    from instrec_pipeline.predict import format_prediction, predict_video

    manifest = pd.read_csv(tiny_dataset)
    row = manifest[manifest["split"] == "test"].iloc[0]
    pred = predict_video(tiny_dataset.parent / row["source"], tags_layout, "tiny_tags", "cpu")
    assert pred.multilabel and pred.thresholds is not None
    assert list(pred.probs.columns) == ["flute", "guitar", "trumpet", "wind"]
    fusion = pred.probs.loc["fusion"]
    assert pred.labels("fusion") == [c for c in fusion.index if fusion[c] >= pred.thresholds.loc["fusion", c]]
    assert "fusion: [" in format_prediction(pred)
