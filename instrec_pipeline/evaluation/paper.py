"""The paper's clip-level results ("Results to beat" in PAPER.md): each report shows the target beside ours.

Numbers are percentages copied verbatim from the paper; they are kept as written (not as fractions) so the
report can print them without float round-off.

A row of ours gets the paper's number only when it was produced the way the paper's was: the same network
(``choi_icmr`` is the paper's Choi net; ``choi``, a wider extension, has no paper counterpart), the paper's
segment strategy, the paper's k frames, the same audio net under the fusion. Otherwise :func:`paper_row`
says why not, and the report shows that reason instead of a number that would not compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's results table; hit1/hit3/f1 in percent. ``key`` is the pipeline's model key;
    ``variant`` the fusion's audio net key; ``k`` the frames per video of the video and fusion rows."""

    model: str
    dataset: str
    hit1: float
    hit3: float
    f1: float
    key: str
    variant: str = ""
    k: int | None = None


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("Inception v3, 50 frames, pre-trained", "FCVID", 69.39, 84.32, 71.23, "video", k=50),
    PaperRow("Inception v3, 20 frames, pre-trained", "YT-8M", 70.07, 84.20, 71.09, "video", k=20),
    PaperRow("Han et al.", "FCVID", 64.13, 76.82, 53.64, "han"),
    PaperRow("Choi et al. + UC", "FCVID", 79.81, 96.09, 78.71, "choi_icmr"),
    PaperRow("Xception + UC", "FCVID", 78.69, 94.44, 79.35, "xception"),
    PaperRow("Choi et al. + UC", "YT-8M", 83.58, 94.23, 84.26, "choi_icmr"),
    PaperRow("Xception + UC", "YT-8M", 83.53, 94.69, 84.16, "xception"),
    PaperRow("Fusion Xception / 50 frames", "FCVID", 88.28, 97.00, 88.27, "fusion", "xception", 50),
    PaperRow("Fusion Choi / 50 frames", "FCVID", 86.97, 96.09, 87.25, "fusion", "choi_icmr", 50),
    PaperRow("Fusion Choi / 20 frames", "YT-8M", 84.01, 93.41, 84.69, "fusion", "choi_icmr", 20),
)

#: The same table as a DataFrame (columns model, dataset, hit1, hit3, f1, key, variant, k; values in percent).
PAPER_RESULTS: pd.DataFrame = pd.DataFrame([asdict(r) for r in PAPER_ROWS])

_DATASETS = {"fcvid": "FCVID", "yt8m": "YT-8M", "youtube8m": "YT-8M"}

#: Audio nets the paper reports, and the fusion audio nets it reports.
_AUDIO = ("han", "choi_icmr", "xception")
#: Our strategies that are the paper's UC: segments averaged (the paper's text) or concatenated (its code).
PAPER_UC = ("UC", "UCcat")
#: Why ``choi`` never gets the paper's Choi number.
CHOI_EXTENSION = "wider Choi with global pooling (extension)"


@dataclass(frozen=True)
class Setup:
    """How one of our rows was produced, as far as the paper comparison needs: the audio segment strategy
    (audio rows; for the fusion, its audio net's), k frames per video (video and fusion rows) and the
    fusion's audio net. None = not recorded, which never matches: a number is shown only when known to
    compare."""

    strategy: str | None = None
    k: int | None = None
    audio: str | None = None


def normalise_dataset(dataset: str) -> str | None:
    """Map 'fcvid' / 'FCVID' / 'yt8m' / 'YT-8M' to the paper's spelling; None for anything else."""
    return _DATASETS.get(dataset.lower().replace("-", "").replace("_", "").replace(" ", ""))


def _strategy_departs(strategy: str | None) -> str:
    if strategy is None:
        return "segment strategy not recorded"
    return "" if strategy in PAPER_UC else f"{strategy} segments (paper: UC)"


def paper_row(
    model_key: str,
    dataset: str,
    *,
    strategy: str | None = None,
    k: int | None = None,
    audio: str | None = None,
) -> tuple[PaperRow | None, str]:
    """The paper's row to compare one of ours with, and why there is none: ``(row, "")`` or
    ``(None, reason)``.

    The reason is empty when nothing of ours departs from the paper — the dataset is not the paper's, the
    row has no counterpart in the paper (score averaging, ablations, floors), or the paper did not report
    that model there (Han on YT-8M). Otherwise it says what departs (the extension ``choi``, a CC strategy,
    another k, a fusion on another audio net), for the report to mark the row with.
    """
    ds = normalise_dataset(dataset)
    if ds is None:
        return None, ""
    rows = [r for r in PAPER_ROWS if r.dataset == ds]
    if model_key == "choi":
        return None, CHOI_EXTENSION
    if model_key in _AUDIO:
        if why := _strategy_departs(strategy):
            return None, why
        return next((r for r in rows if r.key == model_key), None), ""
    if model_key == "video":
        row = next(r for r in rows if r.key == "video")
        if k != row.k:
            return None, "k not recorded" if k is None else f"k = {k} frames (paper: {row.k} on {ds})"
        return row, ""
    if model_key in ("fusion", "fusion_insample"):  # leak-free or, as the paper trained it, in-sample
        if audio is None:
            return None, "fusion's audio net not recorded"
        if audio == "choi":
            return None, f"fusion on the {CHOI_EXTENSION}"
        same_audio = [r for r in rows if r.key == "fusion" and r.variant == audio]
        if not same_audio:
            fused = " / ".join(sorted({r.variant for r in rows if r.key == "fusion"}))
            return None, f"fusion on {audio} (paper on {ds}: {fused})"
        if why := _strategy_departs(strategy):
            return None, f"fusion's audio: {why}"
        row = next((r for r in same_audio if r.k == k), None)
        if row is None:
            ks = " / ".join(str(r.k) for r in same_audio)
            return None, "k not recorded" if k is None else f"k = {k} frames (paper: {ks} on {ds})"
        return row, ""
    return None, ""
