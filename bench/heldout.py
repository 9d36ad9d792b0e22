"""Held-out benchmark (issue #14): on data harder than the demo, with a shift at test, does the late fusion
beat score averaging and its best input? Prints the report's answer, asserts nothing.

    .venv/bin/python bench/heldout.py [--quick] [--out bench/out/heldout] [--fresh]

The corpus comes from the project's own demo generator (real soundfont renderings muxed into mp4), made
harder on purpose, because the demo is too easy to tell the models apart (every row scores ~90-100 %):

- all twelve FCVID classes; the ensembles play several General MIDI parts (chamber music = violin, viola,
  cello; rock band = distortion guitar, bass, drum kit; symphony orchestra = strings, brass, timpani);
- in about half the videos, pink background noise (SNR 8-25 dB) and, independently, a quieter second
  instrument of another class, with a run of frames cutting away to that instrument's look;
- visual clutter: hue jitter wide enough to reach the neighbouring class's hue, sensor noise, a passing
  occluder (violin and cello share a shape: only the sound tells them apart there);
- a shift at test only: the test split is rendered with another soundfont (TimGM6mb instead of FluidR3)
  and noisier (SNR 3-15 dB in 3/4 of its videos); without that soundfont, with other GM programs of the
  same families (nylon for steel guitar, bright for grand piano, ...). Val is like train, so early
  stopping and the fusion's fitting never see the shift.

It is declared as a user dataset (a datasets YAML with ``manifest``, ``classes``, ``training``), every asset
is materialised with Dagster, and the report's summary, comparisons (paired bootstrap) and flags are
printed, with a plain verdict and the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

#: FCVID's twelve classes (the registry's order).
CLASSES: tuple[str, ...] = (
    "accordion", "cello", "chamberMusic", "flute", "guitar", "harmonica", "piano", "rockBand",
    "saxophone", "symphonyOrchestra", "trumpet", "violin",
)  # fmt: skip
#: The second soundfont of the shift at test (Debian package timgm6mb-soundfont, `make bench-heldout`).
SHIFT_SOUNDFONT = "TimGM6mb.sf2"
REPO = Path(__file__).resolve().parents[1]

#: Full run: 12 classes × 20 videos (10 train / 5 val / 5 test each: n_test = 60), the demo's 5-12 s clips.
#: Audio epochs are capped: seven audio nets are trained (four models, plus the Choi net again per fold of
#: the fusion's out-of-fold inputs), at 25 s (idle) to 100 s (shared machine) per Choi epoch on 2 cores.
FULL: dict[str, Any] = {
    "videos_per_class": 20,
    "seconds": (5.0, 12.0),
    "training": {
        "audio": {"max_epochs": 15, "patience": 4},
        "video": {"max_epochs": 40, "patience": 8, "k": 10},
        # Out-of-fold inputs from 3 folds (3 more audio + video fits), not the default 5: the time budget.
        "fusion": {"k": 10, "n": 128, "batch_size": 8, "dropout": 0.5, "max_epochs": 30, "patience": 8,
                   "folds": 3},
    },
}  # fmt: skip
#: Smoke run: 3 short videos per class (1/1/1), 2 epochs, one video learning rate, one held-out slice.
QUICK: dict[str, Any] = {
    "videos_per_class": 3,
    "seconds": (2.0, 3.0),
    "training": {
        "audio": {"max_epochs": 2, "patience": 2},
        "video": {"max_epochs": 2, "patience": 2, "k": 4, "lr": 0.01},
        "fusion": {"k": 4, "n": 64, "batch_size": 4, "max_epochs": 2, "patience": 2, "inputs": "holdout",
                   "holdout": 0.5},
    },
}  # fmt: skip
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")  # Dagster's, at import


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few short videos per class, 2 epochs")
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "out" / "heldout"),
        help="corpus, datasets file and store go here (default bench/out/heldout)",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="empty this run's store first (the corpus is kept: it is cached by its spec)",
    )  # fmt: skip
    return parser.parse_args(argv)


def corpus_spec(quick: bool) -> tuple[Any, str]:
    """The generator's spec, and the shift at test in words (another soundfont when installed, else other
    programs of the same families), so the report says which one it measured."""
    from instrec_pipeline.datasets.demo import Degradation, DemoSpec, find_soundfont

    plan = QUICK if quick else FULL
    train = Degradation(noise_prob=0.5, snr_db=(8.0, 25.0), distractor_prob=0.5, cutaways=0.3, clutter=0.5)
    try:
        find_soundfont(SHIFT_SOUNDFONT)
        shift = {"soundfont": SHIFT_SOUNDFONT}
        words = f"test rendered with {SHIFT_SOUNDFONT} (train/val: {find_soundfont().name})"
    except FileNotFoundError:
        shift = {"variants": True}
        words = f"test played with other GM programs of the same families ({SHIFT_SOUNDFONT} not installed)"
    test = dataclasses.replace(train, noise_prob=0.75, snr_db=(3.0, 15.0), **shift)
    spec = DemoSpec(
        classes=CLASSES, videos_per_class=plan["videos_per_class"], min_seconds=plan["seconds"][0],
        max_seconds=plan["seconds"][1], seed=14, degradation=train, test_degradation=test,
    )  # fmt: skip
    return spec, words + "; test noise: 75 % of its videos at 3-15 dB SNR (train/val: 50 % at 8-25 dB)"


def write_datasets_yaml(path: Path, name: str, manifest: Path, training: dict[str, dict[str, Any]]) -> None:
    """Classes and ``multilabel`` given, so the registry never reads a manifest that is not there yet."""
    import yaml

    entry = {"manifest": str(manifest), "classes": list(CLASSES), "multilabel": False, "training": training}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"datasets": {name: entry}}, sort_keys=False))


def section(markdown: str, title: str) -> str:
    """The body of the report's ``## title…`` section ('' if it has none)."""
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    return match.group(1).strip() if match else ""


def _pct_ci(row: pd.Series, metric: str) -> str:
    low, high = row.get(f"{metric}_cilow"), row.get(f"{metric}_cihigh")
    value = f"{100 * row[metric]:.1f}"
    return value if pd.isna(low) or pd.isna(high) else f"{value} [{100 * low:.1f}, {100 * high:.1f}]"


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """model, n, Hit@1 [95 % CI], Hit@3, F1 macro [CI], flags: the rows readable in a terminal."""
    rows = []
    for _, r in summary.iterrows():
        flags = r.get("flags")
        rows.append({
            "model": r["model"], "n": int(r["n"]), "Hit@1 % [95% CI]": _pct_ci(r, "hit1"),
            "Hit@3 %": f"{100 * r['hit3']:.1f}", "F1 macro % [95% CI]": _pct_ci(r, "f1_macro"),
            "flags": "" if not isinstance(flags, str) else flags,
        })  # fmt: skip
    return pd.DataFrame(rows)


def verdict(summary: pd.DataFrame, comparisons: str) -> str:
    """Plain words: does the fusion beat score averaging and its best input, on points and by the paired
    bootstrap (a lead within the noise of a few dozen test clips is not a win)."""
    hit1 = dict(zip(summary["model"], summary["hit1"], strict=True))
    if "fusion" not in hit1 or "score_average" not in hit1:
        return "no fusion or score-averaging row in the report: nothing to compare"
    pattern = re.compile(
        r"- `fusion` − `([^`]+)`: Hit@1 ([+-][\d.]+) points.*: (better|worse|no clear difference)"
    )
    lines = []
    for line in comparisons.splitlines():
        m = pattern.match(line)
        if m:
            other, diff, word = m.group(1), float(m.group(2)), m.group(3)
            beat = "beats" if diff > 0 else "ties with" if diff == 0 else "falls below"
            lines.append(f"fusion {beat} `{other}` ({diff:+.1f} Hit@1 points); paired bootstrap: {word}")
    return "\n".join(lines) or "the report has no comparisons of the fusion"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    out = Path(args.out).resolve()
    name = "heldout_quick" if args.quick else "heldout"
    plan = QUICK if args.quick else FULL
    corpus, store = out / f"corpus_{name}", out / f"store_{name}"
    yaml_path = out / f"datasets_{name}.yaml"
    # The registry reads $INSTREC_DATASETS once, and partitions are fixed when the Dagster definitions are
    # imported: declare the dataset before anything of instrec_pipeline but the generator is imported.
    write_datasets_yaml(yaml_path, name, corpus / "manifest.csv", plan["training"])
    os.environ["INSTREC_DATASETS"] = str(yaml_path)
    if args.fresh and store.exists():
        shutil.rmtree(store)

    from instrec_pipeline.datasets.demo import generate_demo

    spec, shift = corpus_spec(args.quick)
    print(f"bench/heldout.py{' --quick' if args.quick else ''} on {os.cpu_count()} cores → {out}", flush=True)
    print(f"corpus: {len(spec.classes)} classes × {spec.videos_per_class} videos, "
          f"{spec.min_seconds:g}-{spec.max_seconds:g} s; {shift}", flush=True)  # fmt: skip
    t = time.perf_counter()
    generate_demo(corpus, spec)
    generated = time.perf_counter() - t
    print(f"corpus ready in {generated:.0f} s: {corpus}", flush=True)

    from dagster import DagsterInstance

    from instrec_pipeline.cli import materialize_dataset
    from instrec_pipeline.store.layout import Layout

    t = time.perf_counter()
    materialize_dataset(name, store, DagsterInstance.ephemeral())
    materialised = time.perf_counter() - t

    report_dir = Layout(store).report_dir(name)
    summary = pd.read_csv(report_dir / "summary.csv")
    markdown = (report_dir / "report.md").read_text()
    comparisons = section(markdown, "Comparisons")
    with pd.option_context("display.width", 200, "display.max_colwidth", 90):
        print(f"\nSummary ({report_dir / 'summary.csv'}):")
        print(summary_table(summary).to_string(index=False))
    print(f"\nComparisons (paired bootstrap):\n{comparisons or 'none'}")
    print(f"\nFlags:\n{section(markdown, 'Flags') or 'none'}")
    print(f"\nVerdict:\n{verdict(summary, comparisons)}")
    total = time.perf_counter() - started
    print(f"\nWall time: {total / 60:.1f} min (corpus {generated:.0f} s, "
          f"materialisation {materialised:.0f} s); report: {report_dir / 'report.md'}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
