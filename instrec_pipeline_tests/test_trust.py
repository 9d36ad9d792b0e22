"""Results a researcher can trust: intervals, paired comparisons, floors, flags and provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instrec_pipeline.evaluation.paper import CHOI_EXTENSION, Setup
from instrec_pipeline.evaluation.probes import linear_probe
from instrec_pipeline.evaluation.report import ModelResult, build_report
from instrec_pipeline.evaluation.uncertainty import bootstrap_intervals, paired_bootstrap
from instrec_pipeline.training.data import SplitData

CLASSES = ["accordion", "cello", "flute", "guitar"]


def _probs(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random((len(y), len(CLASSES)))
    p[np.arange(len(y)), y] += signal
    return p / p.sum(1, keepdims=True)


def test_intervals_cover_the_estimate_and_shrink_with_n() -> None:
    widths = []
    for n in (40, 400, 4000):
        y = np.arange(n) % 4
        p = _probs(y, 0.6, n)
        ci = bootstrap_intervals(y, p, n_boot=300)
        hit1 = float((p.argmax(1) == y).mean())
        assert ci["hit1"].contains(hit1) and ci["hit3"].low <= ci["hit3"].high
        widths.append(ci["hit1"].high - ci["hit1"].low)
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.05


def test_paired_bootstrap_tells_a_real_gain_from_noise() -> None:
    y = np.arange(600) % 4
    strong, weak = _probs(y, 1.0, 1), _probs(y, 0.2, 2)
    gain = paired_bootstrap(y, strong, weak, n_boot=300)
    assert gain.diff > 0.2 and gain.interval.low > 0 and gain.p_not_better == 0.0
    same = paired_bootstrap(y, strong, strong, n_boot=300)
    assert same.diff == 0 and same.interval.low <= 0 <= same.interval.high and same.p_not_better == 1.0


def test_linear_probe_is_a_real_floor() -> None:
    rng = np.random.default_rng(0)

    def split(n: int) -> SplitData:
        labels = np.arange(n) % 4
        frames = {f"v{i}": rng.normal(size=(5, 16)) + 3 * np.eye(16)[labels[i]] for i in range(n)}
        return SplitData([f"v{i}" for i in range(n)] + ["silent"], np.append(labels, 0), frames=frames)

    train, test = split(40), split(20)
    probs = linear_probe(train, test, lambda d: d.frames, 4)
    assert probs.shape == (21, 4) and np.allclose(probs.sum(1), 1)
    assert (probs[:20].argmax(1) == test.labels[:20]).mean() == 1.0
    np.testing.assert_allclose(probs[20], 0.25)  # no features: the uniform prior, as the neural rows


def test_report_flags_rows_below_their_floor_and_marks_random_weights(tmp_path: Path) -> None:
    y = np.arange(80) % 4
    good, poor = _probs(y, 1.0, 3), _probs(y, 0.05, 4)
    mark = ("random Inception weights",)
    results = [
        ModelResult("choi", "Choi", y, good, floors=("probe_audio",)),
        ModelResult("video", "Video", y, poor, floors=("probe_video",), marks=mark, setup=Setup(k=50)),
        ModelResult("fusion", "Fusion", y, poor, floors=("score_average", "choi", "video"), marks=mark,
                    setup=Setup(strategy="UCcat", k=50, audio="xception")),
        ModelResult("score_average", "Score averaging", y, (good + poor) / 2, marks=mark),
        ModelResult("probe_audio", "Floor audio", y, poor),
        ModelResult("probe_video", "Floor video", y, good, marks=mark),
    ]
    rep = build_report(
        "fcvid", CLASSES, results, tmp_path,
        provenance={"Inception v3 weights": "random: random init (seed 0)"},
        comparisons=[("fusion", "score_average"), ("fusion", "choi")],
    )  # fmt: skip
    assert "choi" not in rep.flags  # above its floor
    assert rep.flags["video"] == [f"below `probe_video` (hit1 {100 * rep.scores['video'].hit1:.2f} < "
                                  f"{100 * rep.scores['probe_video'].hit1:.2f})"]  # fmt: skip
    assert {f.split(" (")[0] for f in rep.flags["fusion"]} == {"below `score_average`", "below `choi`"}
    s = rep.summary.set_index("model")
    assert np.isnan(s.loc["choi", "paper_hit1"]) and s.loc["choi", "marks"] == CHOI_EXTENSION  # an extension
    assert np.isnan(s.loc["fusion", "paper_hit1"]) and np.isnan(s.loc["video", "paper_hit1"])  # marked
    assert s.loc["video", "marks"] == "random Inception weights" and "below" in s.loc["fusion", "flags"]
    for m in ("hit1", "hit3", "f1_macro"):
        assert (s[f"{m}_cilow"] <= s[m] + 1e-12).all() and (s[m] <= s[f"{m}_cihigh"] + 1e-12).all()
    md = rep.markdown
    assert "## Provenance" in md and "random: random init (seed 0)" in md
    fusion_line = next(line for line in md.splitlines() if line.startswith("| Fusion (`fusion`)"))
    assert "⚠ below `score_average`" in fusion_line and "† random Inception weights" in fusion_line
    assert len(rep.comparisons) == 2 and rep.comparisons[0].startswith("`fusion` − `score_average`: Hit@1 -")
    assert "worse" in rep.comparisons[1]


def test_overlapping_or_mismatched_splits_block_training() -> None:
    """A video in two splits (by id, or the same file under two ids) or features extracted with other
    parameters in one split: the check fails with what and where, so no model trains on it."""
    import pandas as pd

    from instrec_pipeline.features.quality import splits_clean

    def table(ids: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"video_id": ids, "raw_path": [f"/raw/aa/{i}digest.mp4" for i in ids]})

    manifests = {"train": table(["a", "b"]), "val": table(["c"]), "test": table(["d"])}
    same = {s: {"frames": "p1", "logmel_choi": "m1"} for s in manifests}
    assert splits_clean(manifests, manifests, same).passed
    leaked = {**manifests, "test": table(["d", "a"])}
    finding = splits_clean(leaked, leaked, same)
    assert not finding.passed and "1 video id(s) in both test and train: ['a']" in finding.reason
    copy = {**manifests, "val": pd.DataFrame({"video_id": ["c"], "raw_path": ["/raw/aa/adigest.mp4"]})}
    finding = splits_clean(manifests, copy, same)
    assert not finding.passed
    assert "identical file(s) in train and val: ['a (train) = c (val)']" in finding.reason
    other = {**same, "test": {"frames": "p2", "logmel_choi": "m1"}}
    finding = splits_clean(manifests, manifests, other)
    assert not finding.passed and "frames extracted with different parameters" in finding.reason
