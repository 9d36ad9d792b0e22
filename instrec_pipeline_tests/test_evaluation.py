"""Evaluation package: metrics against hand-computed cases, the paper table, figures, report files."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from instrec_pipeline.evaluation.metrics import Scores, confusion, hit_at_k, per_class_table, predict, score
from instrec_pipeline.evaluation.paper import CHOI_EXTENSION, PAPER_RESULTS, PAPER_ROWS, Setup, paper_row
from instrec_pipeline.evaluation.plots import confusion_png, curves_png, tsne_embedding, tsne_png
from instrec_pipeline.evaluation.report import ModelResult, build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 5 samples x 4 classes; every expected number below is worked out by hand in the comments.
#   sample  true  scores                  ranking (ties -> lower index first)  true rank
#   0       0     .5 .3 .1 .1             0 1 2 3                              1
#   1       0     .1 .2 .3 .4             3 2 1 0                              4
#   2       1     .2 .6 .1 .1             1 0 2 3                              1
#   3       2     .1 .5 .3 .1             1 2 0 3                              2
#   4       3     .3 .4 .0 .3             1 0 3 2  (0 and 3 tie at .3)          3
Y5 = np.array([0, 0, 1, 2, 3])
P5 = np.array(
    [
        [0.5, 0.3, 0.1, 0.1],
        [0.1, 0.2, 0.3, 0.4],
        [0.2, 0.6, 0.1, 0.1],
        [0.1, 0.5, 0.3, 0.1],
        [0.3, 0.4, 0.0, 0.3],
    ]
)
# predictions: 0 3 1 1 1
#   class 0: TP 1, FP 0, FN 1 -> P 1,   R 1/2, F1 2/3, support 2
#   class 1: TP 1, FP 2, FN 0 -> P 1/3, R 1,   F1 1/2, support 1
#   class 2: TP 0, FP 0, FN 1 -> P 0,   R 0,   F1 0,   support 1
#   class 3: TP 0, FP 1, FN 1 -> P 0,   R 0,   F1 0,   support 1
# macro F1 = (2/3 + 1/2) / 4 = 7/24; weighted F1 = (2 * 2/3 + 1/2) / 5 = 11/30


def test_hit_at_k_hand_computed() -> None:
    assert hit_at_k(Y5, P5, 1) == pytest.approx(2 / 5)
    assert hit_at_k(Y5, P5, 2) == pytest.approx(3 / 5)
    assert hit_at_k(Y5, P5, 3) == pytest.approx(4 / 5)
    assert hit_at_k(Y5, P5, 4) == 1.0


def test_hit_at_k_small_three_class_case() -> None:
    # 4 samples x 3 classes: true ranks 1, 2, 2, 1 -> Hit@1 = 2/4, Hit@2 = 4/4.
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.3, 0.4, 0.3]])
    assert hit_at_k(y, p, 1) == 0.5
    assert hit_at_k(y, p, 2) == 1.0


def test_ties_go_to_lowest_class_index() -> None:
    p = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.4, 0.2, 0.4]])
    assert list(predict(p)) == [0, 1, 0]
    assert hit_at_k(np.array([0, 1, 0]), p, 1) == 1.0
    assert hit_at_k(np.array([1, 2, 2]), p, 1) == 0.0
    # Sample 4 of the main case: classes 0 and 3 tie for second place; 0 takes it, so Hit@2 misses.
    assert hit_at_k(Y5[4:], P5[4:], 2) == 0.0
    assert hit_at_k(Y5[4:], P5[4:], 3) == 1.0
    # Hit@1 must agree with the accuracy implied by the confusion matrix, ties included.
    cm = confusion(np.array([1, 2, 2]), p, 3)
    assert np.trace(cm) / cm.sum() == hit_at_k(np.array([1, 2, 2]), p, 1)


def test_k_at_least_c_is_perfect_and_small_c() -> None:
    y = np.array([0, 1, 2])
    p = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # all wrong at k=1
    assert hit_at_k(y, p, 1) == 0.0
    assert hit_at_k(y, p, 3) == 1.0
    assert hit_at_k(y, p, 10) == 1.0
    # Two classes: sklearn's binary path is bypassed; Hit@1 is accuracy, Hit@3 is capped at C = 2.
    y2, p2 = np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert hit_at_k(y2, p2, 1) == pytest.approx(2 / 3)
    assert hit_at_k(y2, p2, 3) == 1.0
    # y_true holding only two distinct labels out of many must not trip sklearn's binary detection.
    assert hit_at_k(np.array([0, 1]), np.array([[0.5, 0.2, 0.3], [0.5, 0.2, 0.3]]), 2) == 0.5


def test_score_hand_computed() -> None:
    s = score(Y5, P5)
    assert isinstance(s, Scores)
    assert s.hit1 == pytest.approx(0.4)
    assert s.hit3 == pytest.approx(0.8)
    assert s.f1_macro == pytest.approx(7 / 24)
    assert s.f1_weighted == pytest.approx(11 / 30)
    assert s.n == 5


def test_score_class_absent_from_y_true() -> None:
    # C = 4, classes 2 and 3 never occur. Predictions 0 1 1 1:
    #   class 0: P 1, R 1/2, F1 2/3 (support 2); class 1: P 2/3, R 1, F1 4/5 (support 2)
    # Classes neither present nor predicted are left out of the macro mean: (2/3 + 4/5) / 2 = 11/15.
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1, 0.0, 0.0], [0.4, 0.5, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.0, 0.7, 0.2, 0.1]])
    s = score(y, p)
    assert s.hit1 == 0.75
    assert s.hit3 == 1.0
    assert s.f1_macro == pytest.approx(11 / 15)
    assert s.f1_weighted == pytest.approx(11 / 15)
    # An absent class that *is* predicted counts (F1 0): predictions 0 2 1 1 ->
    #   class 0: F1 2/3, class 1: F1 1, class 2: F1 0 -> macro 5/9, weighted (2*2/3 + 2*1) / 4 = 5/6.
    p2 = p.copy()
    p2[1] = [0.1, 0.2, 0.7, 0.0]
    s2 = score(y, p2)
    assert s2.f1_macro == pytest.approx(5 / 9)
    assert s2.f1_weighted == pytest.approx(5 / 6)
    table = per_class_table(y, p, ["a", "b", "c", "d"])
    assert table.loc[2:3, ["precision", "recall", "f1"]].to_numpy().tolist() == [[0, 0, 0], [0, 0, 0]]
    assert table["support"].tolist() == [2, 2, 0, 0]


def test_per_class_table_values() -> None:
    table = per_class_table(Y5, P5, ["accordion", "cello", "flute", "piano"])
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert table["class"].tolist() == ["accordion", "cello", "flute", "piano"]
    np.testing.assert_allclose(table["precision"], [1.0, 1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(table["recall"], [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(table["f1"], [2 / 3, 0.5, 0.0, 0.0])
    assert table["support"].tolist() == [2, 1, 1, 1]


def test_confusion_counts() -> None:
    cm = confusion(Y5, P5, 4)
    expected = [
        [1, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 1, 0, 0],
    ]
    assert cm.tolist() == expected
    # Always C x C, even when the last classes never occur.
    assert confusion(np.array([0, 0]), np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), 4).shape == (4, 4)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError):
        score(np.array([0, 3]), np.ones((2, 3)))  # id out of range
    with pytest.raises(ValueError):
        score(np.array([0, 1, 2]), np.ones((2, 3)))  # length mismatch
    with pytest.raises(ValueError):
        score(np.array([], dtype=int), np.ones((0, 3)))
    with pytest.raises(ValueError):
        hit_at_k(Y5, P5, 0)
    with pytest.raises(ValueError):
        per_class_table(Y5, P5, ["only", "three", "names"])


def test_paper_table_and_lookup() -> None:
    assert len(PAPER_ROWS) == 10 and len(PAPER_RESULTS) == 10
    assert {"model", "dataset", "hit1", "hit3", "f1"} <= set(PAPER_RESULTS.columns)
    choi, why = paper_row("choi_icmr", "fcvid", strategy="UCcat")
    assert why == "" and choi is not None and (choi.hit1, choi.hit3, choi.f1) == (79.81, 96.09, 78.71)
    assert choi.model == "Choi et al. + UC"
    assert paper_row("xception", "YT-8M", strategy="UC")[0].f1 == 84.16
    assert paper_row("xception", "fcvid", strategy="UCcat")[0].model == "Xception + UC"
    assert paper_row("han", "fcvid", strategy="UC") == (PAPER_ROWS[2], "")
    assert paper_row("han", "yt8m", strategy="UC") == (None, "")  # not in the paper: nothing departs
    for key in ("score_average", "fusion_no_audio", "fusion_no_video", "probe_audio", "nonsense"):
        assert paper_row(key, "fcvid") == (None, "")
    assert paper_row("choi_icmr", "imagenet", strategy="UCcat") == (None, "")
    assert paper_row("choi", "imagenet") == (None, "")  # no paper numbers there: no departure to mark


def test_paper_row_compares_like_with_like() -> None:
    """A paper number only beside a row produced the same way: same net, UC, same k, same fusion audio."""
    # Our wider Choi (global pooling) is not the paper's net, whatever its strategy.
    assert paper_row("choi", "fcvid", strategy="UC") == (None, CHOI_EXTENSION)
    # The paper's segment strategy only.
    assert paper_row("choi_icmr", "fcvid", strategy="CC") == (None, "CC segments (paper: UC)")
    assert paper_row("xception", "fcvid", strategy="CC")[0] is None
    assert paper_row("han", "fcvid") == (None, "segment strategy not recorded")
    # Video: the paper's k for that dataset (50 FCVID, 20 YT-8M).
    assert paper_row("video", "yt8m", k=20)[0].model == "Inception v3, 20 frames, pre-trained"
    assert paper_row("video", "fcvid", k=50)[0].model == "Inception v3, 50 frames, pre-trained"
    assert paper_row("video", "fcvid", k=20) == (None, "k = 20 frames (paper: 50 on FCVID)")
    assert paper_row("video", "yt8m", k=50)[0] is None
    assert paper_row("video", "fcvid") == (None, "k not recorded")
    # Fusion: the same audio family and k, never the best row of the dataset regardless.
    row, why = paper_row("fusion", "fcvid", strategy="UC", k=50, audio="xception")
    assert why == "" and row.model == "Fusion Xception / 50 frames" and row.hit1 == 88.28
    row, _ = paper_row("fusion", "fcvid", strategy="UCcat", k=50, audio="choi_icmr")
    assert row.model == "Fusion Choi / 50 frames" and row.hit1 == 86.97
    assert paper_row("fusion", "yt8m", strategy="UCcat", k=20, audio="choi_icmr")[0].hit1 == 84.01
    row, why = paper_row("fusion", "fcvid", strategy="UCcat", k=20, audio="choi_icmr")
    assert row is None and why == "k = 20 frames (paper: 50 on FCVID)"
    row, why = paper_row("fusion", "fcvid", strategy="UC", k=50, audio="choi")
    assert row is None and CHOI_EXTENSION in why  # the default fusion: on the extension, no paper row
    row, why = paper_row("fusion", "yt8m", strategy="UC", k=20, audio="xception")
    assert row is None and why == "fusion on xception (paper on YT-8M: choi_icmr)"
    assert paper_row("fusion", "fcvid", strategy="UC", k=50, audio="han")[0] is None
    assert paper_row("fusion", "fcvid", strategy="CC", k=50, audio="xception")[0] is None
    assert paper_row("fusion", "fcvid", k=50)[0] is None  # audio net unknown: no guess


def test_paper_table_matches_paper_md() -> None:
    """The numbers were copied by hand; cross-check them against PAPER.md when it is around."""
    candidates = [Path("/work/shared/PAPER.md"), Path(__file__).resolve().parents[1] / "shared" / "PAPER.md"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        pytest.skip("PAPER.md not available")
    section = path.read_text(encoding="utf-8").split("## Results to beat", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"\d+\.\d+", cells[2]):
            rows.append((cells[0], cells[1], float(cells[2]), float(cells[3]), float(cells[4])))
    ours = [(r.model, r.dataset, r.hit1, r.hit3, r.f1) for r in PAPER_ROWS]
    assert ours == rows


def _assert_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    return img


def test_confusion_png_valid() -> None:
    names = [f"class{i}" for i in range(4)]
    _assert_png(confusion_png(confusion(Y5, P5, 4), names, "test"))
    _assert_png(confusion_png(np.zeros((4, 4), dtype=int), names, "empty rows"))  # no division by zero
    with pytest.raises(ValueError):
        confusion_png(np.zeros((3, 3)), names, "bad")


def test_curves_png_valid() -> None:
    hist = {"train_loss": [2.0, 1.5, 1.1], "val_loss": [2.1, 1.7, 1.6], "val_hit1": [0.3, 0.5, 0.6]}
    _assert_png(curves_png(hist, "curves"))
    _assert_png(curves_png({"val_hit1": [0.1]}, "metric only"))
    _assert_png(curves_png({}, "empty"))


def test_tsne_png_valid_small_n() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 5)
    feats = rng.normal(size=(15, 8)) + 5 * labels[:, None]
    data = tsne_png(feats, labels, ["a", "b", "c"], "t-SNE")
    _assert_png(data)
    assert len(data) <= 60_000
    assert tsne_embedding(feats[:3]).shape == (3, 2)  # below t-SNE's minimum: no exception
    _assert_png(tsne_png(feats[:2], labels[:2], ["a", "b", "c"], "two points"))
    # Subsampling keeps the picture cheap on large sets.
    _assert_png(tsne_png(feats, labels, ["a", "b", "c"], "sub", max_points=10))


FCVID = [
    "accordion",
    "cello",
    "chamberMusic",
    "flute",
    "guitar",
    "harmonica",
    "piano",
    "rockBand",
    "saxophone",
    "symphonyOrchestra",
    "trumpet",
    "violin",
]


def _fake(n: int, acc_boost: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(FCVID)
    logits = rng.normal(size=(n, len(FCVID)))
    logits[np.arange(n), y] += acc_boost
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_build_report(tmp_path: Path) -> None:
    y, p = _fake(36, 2.0, 1)
    rng = np.random.default_rng(2)
    # The main hand-computed case padded to 12 classes gives exact, known numbers in the table.
    p5 = np.zeros((5, 12))
    p5[:, :4] = P5
    results = [
        ModelResult(
            "choi_icmr",
            "Choi et al.",
            y,
            p,
            history={"train_loss": [2.0, 1.0, 0.7], "val_loss": [2.1, 1.2, 1.0], "val_hit1": [0.2, 0.5, 0.6]},
            features=rng.normal(size=(36, 16)) + y[:, None],
            setup=Setup(strategy="UCcat"),
        ),
        ModelResult("fusion", "Fusion", Y5, p5, setup=Setup(strategy="UC", k=50, audio="xception")),
        ModelResult("score_average", "Score average", *_fake(24, 3.0, 3)),
    ]
    out = tmp_path / "report"
    rep = build_report("fcvid", FCVID, results, out)

    expected = {
        "report.md",
        "summary.csv",
        "per_class_choi_icmr.csv",
        "per_class_fusion.csv",
        "per_class_score_average.csv",
        "confusion_choi_icmr.png",
        "confusion_fusion.png",
        "confusion_score_average.png",
        "curves_choi_icmr.png",
        "tsne_choi_icmr.png",
    }
    assert set(rep.files) == expected
    assert {p.name for p in out.iterdir()} == expected  # no temp files left behind
    for name, path in rep.files.items():
        assert path == out / name and path.stat().st_size > 0
        if name.endswith(".png"):
            _assert_png(path.read_bytes())
            assert path.stat().st_size <= 60_000

    s = rep.summary
    assert list(s["model"]) == ["choi_icmr", "fusion", "score_average"]
    for col in ("hit1", "hit3", "f1_macro", "f1_weighted", "n", "paper_hit1", "paper_hit3", "paper_f1"):
        assert col in s.columns
    row = s.set_index("model")
    assert row.loc["fusion", "hit1"] == pytest.approx(0.4)
    assert row.loc["fusion", "f1_macro"] == pytest.approx(7 / 24)
    assert row.loc["choi_icmr", "paper_hit1"] == pytest.approx(0.7981)
    assert row.loc["fusion", "paper_hit1"] == pytest.approx(0.8828)
    assert np.isnan(row.loc["score_average", "paper_hit1"])
    assert row.loc["choi_icmr", "chance_hit1"] == pytest.approx(1 / 12)
    assert row.loc["choi_icmr", "chance_hit3"] == pytest.approx(3 / 12)
    numeric = [c for c in s.columns if c not in ("model", "title", "paper_model", "marks", "flags")]
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv")[numeric], s[numeric], check_dtype=False)
    assert s["paper_model"].tolist()[:2] == ["Choi et al. + UC", "Fusion Xception / 50 frames"]
    assert pd.isna(s["paper_model"].iloc[2])
    assert pd.read_csv(out / "per_class_fusion.csv")["support"].tolist() == [2, 1, 1, 1] + [0] * 8

    md = rep.markdown
    assert (out / "report.md").read_text(encoding="utf-8") == md
    lines = md.splitlines()
    choi_line = next(line for line in lines if line.startswith("| Choi et al. (`choi_icmr`)"))
    assert "| 79.81 | 96.09 | 78.71 |" in choi_line
    assert f"| {100 * rep.scores['choi_icmr'].hit1:.2f} [" in choi_line  # with its 95% interval
    fusion_line = next(line for line in lines if line.startswith("| Fusion (`fusion`)"))
    assert "| 5 | 40.00 [" in fusion_line and "| 36.67 | 88.28 | 97.00 | 88.27 |" in fusion_line
    avg_line = next(line for line in lines if line.startswith("| Score average (`score_average`)"))
    assert avg_line.count("—") >= 3
    assert any(line.startswith("| chance") and "8.33" in line and "25.00" in line for line in lines)
    assert "| chamberMusic |" in md  # per-class tables
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(uris) == 5  # 3 confusion + 1 curves + 1 t-SNE
    assert base64.b64decode(uris[0]) == (out / "confusion_choi_icmr.png").read_bytes()
    assert len(md) < 500_000


def test_build_report_rejects_bad_input(tmp_path: Path) -> None:
    y, p = _fake(12, 1.0, 0)
    with pytest.raises(ValueError):
        build_report("fcvid", FCVID, [ModelResult("a", "A", y, p), ModelResult("a", "A2", y, p)], tmp_path)
    with pytest.raises(ValueError):
        build_report("fcvid", FCVID, [ModelResult("a", "A", y, p[:, :5])], tmp_path)
    with pytest.raises(ValueError):
        build_report("fcvid", FCVID, [ModelResult("a", "A", y, p, features=np.zeros((3, 4)))], tmp_path)


def test_build_report_unknown_dataset_has_no_paper_numbers(tmp_path: Path) -> None:
    y, p = _fake(12, 1.0, 0)
    rep = build_report("mydata", FCVID, [ModelResult("choi", "Choi", y, p)], tmp_path)
    assert rep.summary["paper_hit1"].isna().all()
    assert "79.81" not in rep.markdown


def test_a_clip_without_input_is_a_miss_not_a_vote_for_class_0() -> None:
    """A missing modality's uniform scores used to be read as "class 0" by argmax (and as the first k
    classes by Hit@k): clips of class 0 then scored as hits without any evidence."""
    probs = np.array([[0.25] * 4, [0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    y = np.array([0, 0, 1])
    s = score(y, probs)
    assert s.hit1 == pytest.approx(2 / 3) and s.hit3 == pytest.approx(2 / 3)
    assert confusion(y, probs, 4).sum() == 2  # the abstaining clip is in no column
    assert per_class_table(y, probs, list("abcd")).loc[0, "recall"] == pytest.approx(0.5)
    assert hit_at_k(np.array([1, 0]), np.array([[0.5, 0.5], [0.9, 0.1]]), 1) == 0.5


def test_report_marks_rows_whose_setup_departs_from_the_paper(tmp_path: Path) -> None:
    """The extension ``choi``, CC, another k, a fusion on another audio net: no paper number, the reason
    shown beside the row."""
    y, p = _fake(24, 2.0, 5)
    results = [
        ModelResult("choi", "Choi wider", y, p, setup=Setup(strategy="UC")),
        ModelResult("choi_icmr", "Choi ICMR", y, p, setup=Setup(strategy="CC")),
        ModelResult("video", "Video", y, p, setup=Setup(k=20), marks=("random Inception weights",)),
        ModelResult("fusion", "Fusion", y, p, setup=Setup(strategy="UC", k=50, audio="choi")),
        ModelResult("score_average", "Score average", y, p),
    ]
    rep = build_report("fcvid", FCVID, results, tmp_path)
    s = rep.summary.set_index("model")
    assert s["paper_hit1"].isna().all()
    assert s.loc["choi", "marks"] == CHOI_EXTENSION
    assert s.loc["choi_icmr", "marks"] == "CC segments (paper: UC)"
    assert s.loc["video", "marks"] == "random Inception weights; k = 20 frames (paper: 50 on FCVID)"
    assert s.loc["fusion", "marks"] == f"fusion on the {CHOI_EXTENSION}"
    assert s.loc["score_average", "marks"] == ""  # no paper counterpart is not a departure
    choi_line = next(line for line in rep.markdown.splitlines() if line.startswith("| Choi wider (`choi`)"))
    assert f"† {CHOI_EXTENSION}" in choi_line and "79.81" not in choi_line
    assert results[0].marks == ()  # the caller's rows are not changed
    # The same rows on a dataset the paper did not use: nothing to compare, nothing marked.
    other = build_report("mydata", FCVID, results[:2], tmp_path / "other").summary
    assert other["marks"].fillna("").eq("").all()
