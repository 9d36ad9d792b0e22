"""Evaluation report of all models on one dataset: a summary table beside the paper's numbers, per-class
tables, confusion matrices, training curves and t-SNE plots.

Everything lands in one directory (CSV + PNG for tools, ``report.md`` for people) and the markdown inlines
the images as ``data:`` URIs, so the Dagster asset can hand it to ``MetadataValue.md`` and the UI shows the
figures without serving files.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from instrec_pipeline.evaluation.metrics import Scores, confusion, per_class_table, score
from instrec_pipeline.evaluation.multilabel import (
    MultiLabelScores,
    label_confusion,
    multilabel_per_class,
    multilabel_score,
)
from instrec_pipeline.evaluation.paper import Setup, normalise_dataset, paper_row
from instrec_pipeline.evaluation.plots import confusion_png, curves_png, tsne_png
from instrec_pipeline.evaluation.uncertainty import Interval, bootstrap_intervals, paired_bootstrap
from instrec_pipeline.store.atomic import atomic_write

DASH = "—"


@dataclass
class ModelResult:
    """One model's test-split output: true ids, class scores (n, C) and optional curves / embeddings."""

    key: str
    title: str
    y_true: np.ndarray
    probs: np.ndarray
    history: dict[str, list[float]] | None = None
    features: np.ndarray | None = None
    #: Multi-label only: per-class decision thresholds, tuned on the val split.
    thresholds: np.ndarray | None = None
    #: Keys of rows this one should beat (its linear floor, its inputs); a row below one is flagged.
    floors: tuple[str, ...] = ()
    #: Departures from the paper's setup shown beside the row (e.g. random Inception weights); a marked
    #: row gets no paper columns: its numbers do not compare with the paper's.
    marks: tuple[str, ...] = ()
    #: The row's headline score (Hit@1; multi-label: macro PR-AUC) for each seed replicate, the main
    #: models first; two or more give the report's mean ± sd.
    replicates: tuple[float, ...] = ()
    #: How the row was produced (strategy, k, fusion audio net): the paper's row is matched on it, and a
    #: departure it reveals is added to ``marks`` by :func:`build_report`.
    setup: Setup = Setup()


@dataclass
class Report:
    """What build_report produced.

    ``summary`` holds fractions in [0, 1] for our scores *and* the paper's (paper values / 100, NaN where the
    paper has none), so columns can be compared directly; only the markdown shows percentages.
    ``files`` maps file name -> path of everything written.
    """

    summary: pd.DataFrame
    markdown: str
    files: dict[str, Path]
    scores: dict[str, Scores | MultiLabelScores] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    comparisons: list[str] = field(default_factory=list)


def _safe(key: str) -> str:
    """Model keys become file names; keep them to a portable character set."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key) or "model"


def _md_cell(text: object) -> str:
    """Escape pipes and newlines, which would break a markdown table row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(x: float | None) -> str:
    return DASH if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100.0 * x:.2f}"


def _paper_pct(x: float | None) -> str:
    """Paper numbers are already percentages; printed as written to avoid float round-off."""
    return DASH if x is None else f"{x:.2f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: Sequence[str]) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _img(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


@dataclass
class _Row:
    """One model's scores seen through its label setting (single- or multi-label)."""

    scores: Scores | MultiLabelScores
    summary: dict[str, object]  # the summary.csv columns
    cells: list[str]  # the summary table's score cells (after model and n)
    headline: str
    per_class: pd.DataFrame
    confusion: np.ndarray


_SINGLE_HEADER = [
    "Hit@1",
    "Hit@3",
    "F1 macro",
    "F1 weighted",
    "paper Hit@1",
    "paper Hit@3",
    "paper F1",
    "paper model",
]
_MULTI_HEADER = ["ROC-AUC macro", "PR-AUC macro", "F1 micro", "F1 macro"]


def _with_ci(x: float, ci: Interval) -> str:
    return f"{_pct(x)} [{_pct(ci.low)}, {_pct(ci.high)}]"


def _single_row(r: ModelResult, probs: np.ndarray, class_names: list[str], reference: str) -> _Row:
    n_classes = len(class_names)
    s = score(r.y_true, probs)
    p = None if r.marks else paper_row(r.key, reference, **asdict(r.setup))[0]
    ci = bootstrap_intervals(np.asarray(r.y_true), probs)
    summary = {
        "hit1": s.hit1,
        "hit3": s.hit3,
        "f1_macro": s.f1_macro,
        "f1_weighted": s.f1_weighted,
        "n": s.n,
        **{f"{m}_ci{end}": getattr(ci[m], end) for m in ci for end in ("low", "high")},
        "marks": "; ".join(r.marks),
        "paper_hit1": round(p.hit1 / 100.0, 4) if p else np.nan,
        "paper_hit3": round(p.hit3 / 100.0, 4) if p else np.nan,
        "paper_f1": round(p.f1 / 100.0, 4) if p else np.nan,
        "paper_model": p.model if p else None,
        "chance_hit1": 1.0 / n_classes,
        "chance_hit3": min(3, n_classes) / n_classes,
    }
    cells = [
        _with_ci(s.hit1, ci["hit1"]),
        _with_ci(s.hit3, ci["hit3"]),
        _with_ci(s.f1_macro, ci["f1_macro"]),
        _pct(s.f1_weighted),
        _paper_pct(p.hit1 if p else None),
        _paper_pct(p.hit3 if p else None),
        _paper_pct(p.f1 if p else None),
        (p.model if p else None) or (f"{DASH} ({'; '.join(r.marks)})" if r.marks else DASH),
    ]
    headline = (
        f"Hit@1 {_with_ci(s.hit1, ci['hit1'])} · Hit@3 {_with_ci(s.hit3, ci['hit3'])} · "
        f"F1 macro {_with_ci(s.f1_macro, ci['f1_macro'])} · F1 weighted {_pct(s.f1_weighted)} · n = {s.n} "
        "(95% bootstrap intervals over the test clips)"
    )
    table = per_class_table(r.y_true, probs, class_names)
    return _Row(s, summary, cells, headline, table, confusion(r.y_true, probs, n_classes))


def _multi_row(r: ModelResult, probs: np.ndarray, class_names: list[str]) -> _Row:
    if r.thresholds is None:
        raise ValueError(f"{r.key}: multi-label rows need thresholds tuned on val")
    s = multilabel_score(r.y_true, probs, r.thresholds)
    summary = {
        "roc_auc_macro": s.roc_auc_macro,
        "pr_auc_macro": s.pr_auc_macro,
        "f1_micro": s.f1_micro,
        "f1_macro": s.f1_macro,
        "n": s.n,
    }
    cells = [_pct(s.roc_auc_macro), _pct(s.pr_auc_macro), _pct(s.f1_micro), _pct(s.f1_macro)]
    headline = (
        f"ROC-AUC {_pct(s.roc_auc_macro)} · PR-AUC {_pct(s.pr_auc_macro)} · F1 micro {_pct(s.f1_micro)} · "
        f"F1 macro {_pct(s.f1_macro)} (thresholds tuned on val) · n = {s.n}"
    )
    table = multilabel_per_class(r.y_true, probs, r.thresholds, class_names)
    return _Row(s, summary, cells, headline, table, label_confusion(r.y_true, probs, r.thresholds))


def _per_class_md(table: pd.DataFrame) -> str:
    """Every column of the per-class table; fractions in %, thresholds as they are."""
    cols = [c for c in table.columns if c != "class"]

    def cell(col: str, v: object) -> object:
        if col == "support":
            return int(v)
        return f"{v:.3f}" if col == "threshold" else _pct(float(v))

    rows = [[row["class"], *(cell(c, row[c]) for c in cols)] for row in table.to_dict("records")]
    header = ["class", *(c.replace("_", "-").upper() if "auc" in c else c for c in cols)]
    return _md_table(header, rows, ["l", *"r" * len(cols)])


def build_report(
    dataset: str,
    class_names: list[str],
    results: list[ModelResult],
    out_dir: Path,
    paper_dataset: str | None = None,
    provenance: dict[str, str] | None = None,
    comparisons: Sequence[tuple[str, str]] = (),
) -> Report:
    """Score every model, write CSV/PNG/markdown into out_dir and return them.

    ``paper_dataset`` names the paper's dataset to put beside ours (default: ``dataset`` itself); the demo,
    made of FCVID classes, is shown beside FCVID's numbers for reference. Multi-label results (multi-hot
    ``y_true`` and val-tuned ``thresholds``) get ROC-AUC, PR-AUC and F1 micro/macro instead, and no paper
    columns: the paper is single-label.

    Single-label rows carry 95% bootstrap intervals; ``comparisons`` (pairs of keys ``(a, b)``) get a
    paired bootstrap of a − b; a row below one of its ``floors`` is flagged; ``provenance`` (what weights,
    parameters and data produced the numbers) heads the report.

    Writes ``report.md``, ``summary.csv`` and per model ``per_class_<key>.csv``, ``confusion_<key>.png``,
    ``curves_<key>.png`` (if history) and ``tsne_<key>.png`` (if features); multi-label reports also
    ``thresholds.csv`` (rows: models, columns: classes). Files of models not in ``results`` that a previous
    run left in out_dir are not touched.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_classes = len(class_names)
    if n_classes < 1:
        raise ValueError("class_names is empty")
    keys = [r.key for r in results]
    if len(set(map(_safe, keys))) != len(keys):
        raise ValueError(f"model keys must be unique (also as file names): {keys}")
    multilabel = bool(results) and np.asarray(results[0].y_true).ndim == 2

    reference = paper_dataset or dataset
    if not multilabel:
        results = [_with_paper_marks(r, reference) for r in results]
    ds_name = dataset if paper_dataset else normalise_dataset(dataset) or dataset
    files: dict[str, Path] = {}
    all_scores: dict[str, Scores | MultiLabelScores] = {}
    summary_rows: list[dict[str, object]] = []
    table_rows: list[list[object]] = []
    sections: list[str] = []

    def write(name: str, data: bytes) -> None:
        files[name] = atomic_write(out_dir / name, lambda fh, d=data: fh.write(d))

    for r in results:
        probs = np.asarray(r.probs)
        if probs.ndim != 2 or probs.shape[1] != n_classes:
            raise ValueError(f"{r.key}: probs shape {probs.shape} does not match {n_classes} classes")
        row = (
            _multi_row(r, probs, class_names) if multilabel else _single_row(r, probs, class_names, reference)
        )
        all_scores[r.key] = row.scores
        summary_rows.append({"model": r.key, "title": r.title, **row.summary})
        table_rows.append([f"{r.title} (`{r.key}`)", row.scores.n, *row.cells])

        fk = _safe(r.key)
        write(f"per_class_{fk}.csv", row.per_class.to_csv().encode())
        kind = "true vs predicted labels" if multilabel else ""
        cm_png = confusion_png(row.confusion, class_names, f"{r.title} — {ds_name} {kind}".rstrip())
        write(f"confusion_{fk}.png", cm_png)
        images = [_img(cm_png, f"confusion {r.key}")]
        if r.history:
            png = curves_png(r.history, f"{r.title} — training")
            write(f"curves_{fk}.png", png)
            images.append(_img(png, f"curves {r.key}"))
        if r.features is not None:
            feats = np.asarray(r.features)
            if feats.shape[0] != row.scores.n:
                raise ValueError(f"{r.key}: {feats.shape[0]} feature rows but {row.scores.n} labels")
            # Multi-label points are coloured by their first label (class order).
            colour = np.asarray(r.y_true).argmax(1) if multilabel else np.asarray(r.y_true)
            png = tsne_png(feats, colour, class_names, f"{r.title} — t-SNE")
            write(f"tsne_{fk}.png", png)
            images.append(_img(png, f"t-SNE {r.key}"))
        sections.append(
            f"## {_md_cell(r.title)} (`{r.key}`)\n\n{row.headline}\n\n"
            f"{_per_class_md(row.per_class)}\n\n" + "\n\n".join(images)
        )

    flags = _flags(results, all_scores)
    compared = [] if multilabel else _compare(results, comparisons)
    for row, r in zip(summary_rows, results, strict=True):
        row["flags"] = "; ".join(flags.get(r.key, []))
        if len(r.replicates) > 1:
            row.update(seeds=len(r.replicates), seeds_mean=float(np.mean(r.replicates)),
                       seeds_sd=float(np.std(r.replicates, ddof=1)))  # fmt: skip
    spread = _seed_spread(results, all_scores)
    for cells, r in zip(table_rows, results, strict=True):
        marks = [*(["⚠ " + f for f in flags.get(r.key, [])]), *(f"† {m}" for m in r.marks)]
        cells[0] = f"{cells[0]} {' '.join(marks)}".rstrip()
    summary = pd.DataFrame(summary_rows)
    write("summary.csv", summary.to_csv(index=False).encode())
    if multilabel:
        thresholds = pd.DataFrame([r.thresholds for r in results], index=keys, columns=class_names)
        write("thresholds.csv", thresholds.rename_axis("model").to_csv().encode())
        header = ["model", "n", *_MULTI_HEADER]
        intro = (
            f"{n_classes} labels, multi-label, clip level, scores in %. Per-class thresholds are tuned "
            "on the val split; the paper (single-label) has no comparable numbers."
        )
    else:
        chance1, chance3 = 1.0 / n_classes, min(3, n_classes) / n_classes
        table_rows.append(["chance (1/C, 3/C)", DASH, _pct(chance1), _pct(chance3), *[DASH] * 6])
        header = ["model", "n", *_SINGLE_HEADER]
        intro = (
            f"{n_classes} classes, clip level, scores in %. Paper: Slizovskaia, Gómez, Haro, ICMR 2017 "
            f"(it does not say which F1 average it reports; {DASH} = no comparable number)."
            + (
                f" Paper columns: {normalise_dataset(paper_dataset) or paper_dataset}, for reference."
                if paper_dataset
                else ""
            )
        )
    summary_md = _md_table(header, table_rows, ["l", *"r" * (len(header) - 2), "l"])
    origin = "\n".join(f"- **{k}**: {_md_cell(v)}" for k, v in (provenance or {}).items())
    checks = "\n".join(f"- `{k}`: {f}" for k, fs in flags.items() for f in fs) or "none"
    markdown = (
        f"# Instrument recognition — {_md_cell(ds_name)}\n\n{intro}\n\n"
        + (f"## Provenance\n\n{origin}\n\n" if origin else "")
        + f"## Summary\n\n{summary_md}\n\n"
        + ("Scores as `value [95% interval]` (bootstrap over the test clips). † marks a setup that departs "
           "from the paper's; such rows get no paper columns.\n\n" if not multilabel else "")
        + ("## Comparisons (paired bootstrap)\n\n" + "\n".join(f"- {c}" for c in compared) + "\n\n"
           if compared else "")
        + (f"## Over seeds\n\n{spread}\n\n" if spread else "")
        + f"## Flags\n\n{checks}\n\n"
        + "\n\n".join(sections) + "\n"
    )  # fmt: skip
    write("report.md", markdown.encode("utf-8"))
    return Report(summary, markdown, files, all_scores, flags, compared)


def _with_paper_marks(r: ModelResult, reference: str) -> ModelResult:
    """``r`` with what departs from the paper's setup among its marks (the extension ``choi``, CC, another
    k, another fusion audio net), so the row says why it has no paper number; ``r`` itself is not changed."""
    why = paper_row(r.key, reference, **asdict(r.setup))[1]
    return replace(r, marks=(*r.marks, why)) if why and why not in r.marks else r


def _seed_spread(results: list[ModelResult], scores: dict[str, Scores | MultiLabelScores]) -> str:
    """Mean ± sd (n − 1) of each replicated row's headline score over its seeds, with every value."""
    lines = []
    for r in results:
        if len(r.replicates) > 1:
            name, v = scores[r.key].headline()[0], r.replicates
            mean, sd = _pct(float(np.mean(v))), _pct(float(np.std(v, ddof=1)))
            lines.append(f"- `{r.key}`: {name} {mean} ± {sd} over {len(v)} seeds ({', '.join(map(_pct, v))})")
    return "\n".join(lines)


def _flags(results: list[ModelResult], scores: dict[str, Scores | MultiLabelScores]) -> dict[str, list[str]]:
    """Rows below one of their floors (a linear probe, score averaging, their own inputs)."""
    out: dict[str, list[str]] = {}
    for r in results:
        name, mine = scores[r.key].headline()
        for floor in r.floors:
            theirs = scores[floor].headline()[1] if floor in scores else None
            if theirs is not None and mine < theirs - 1e-12:
                out.setdefault(r.key, []).append(f"below `{floor}` ({name} {_pct(mine)} < {_pct(theirs)})")
    return out


def _compare(results: list[ModelResult], pairs: Sequence[tuple[str, str]]) -> list[str]:
    """One line per pair: the difference in Hit@1 with its paired-bootstrap interval and p."""
    by_key = {r.key: r for r in results}
    lines = []
    for a, b in pairs:
        if a in by_key and b in by_key:
            c = paired_bootstrap(np.asarray(by_key[a].y_true), by_key[a].probs, by_key[b].probs)
            low, high = c.interval.low, c.interval.high
            verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
            lines.append(
                f"`{a}` − `{b}`: Hit@1 {100 * c.diff:+.2f} points, 95% interval "
                f"[{100 * c.interval.low:+.2f}, {100 * c.interval.high:+.2f}], p(not better) = "
                f"{c.p_not_better:.3f}: {verdict}"
            )
    return lines
