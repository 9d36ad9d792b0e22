"""Figures for the report, returned as PNG bytes so they can be written to disk and inlined as data URIs.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot: no global
figure registry (nothing leaks in a long-running Dagster process) and no GUI backend is ever selected.
A low DPI keeps each image small enough to embed in Dagster markdown metadata.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 80


def _png(fig: Figure) -> bytes:
    """Render with the Agg canvas; bbox_inches='tight' stops long class names being cropped.

    The result is re-encoded as a 256-colour palette PNG (Pillow ships with matplotlib): plots use few
    colours, and this makes them ~3x smaller, which matters once a dozen are inlined in one markdown.
    """
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    raw = buf.getvalue()
    try:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            pal = im.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
        small = io.BytesIO()
        pal.save(small, format="png", optimize=True)
    except Exception:  # an exotic Pillow build: the unquantised PNG is still correct
        return raw
    return small.getvalue() if small.tell() < len(raw) else raw


def confusion_png(cm: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """Confusion matrix coloured by row-normalised recall (small classes stay readable), counts written in."""
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    row = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, row, out=np.zeros(cm.shape, dtype=float), where=row > 0)
    side = max(3.5, 0.45 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row-normalised")
    fontsize = 8 if n <= 15 else 6
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n), labels=list(class_names), rotation=60, ha="right", fontsize=fontsize)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def curves_png(history: dict[str, list[float]], title: str) -> bytes:
    """Training curves per epoch: losses on the left panel, other metrics (hit@1, lr, ...) on the right.

    Losses and accuracies live on different scales, so sharing one axis would flatten one of them.
    """
    losses = {k: v for k, v in history.items() if "loss" in k.lower() and len(v)}
    others = {k: v for k, v in history.items() if "loss" not in k.lower() and len(v)}
    groups = [(name, g) for name, g in (("loss", losses), ("metric", others)) if g]
    if not groups:
        groups = [("(no history)", {})]
    fig = Figure(figsize=(4.5 * len(groups), 3.2))
    for i, (name, series) in enumerate(groups, start=1):
        ax = fig.add_subplot(1, len(groups), i)
        for label, values in series.items():
            v = np.asarray(values, dtype=float)
            marker = "o" if len(v) < 30 else None
            ax.plot(np.arange(1, len(v) + 1), v, marker=marker, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of the rows; perplexity capped below n (sklearn requires it) and tiny n handled directly."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = x.shape[0]
    if n < 4:  # t-SNE is meaningless and sklearn errors out; show the first two centred dimensions instead
        out = np.zeros((n, 2))
        d = min(2, x.shape[1])
        out[:, :d] = x[:, :d] - x[:, :d].mean(axis=0)
        return out
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if x.shape[1] > 50:  # usual PCA pre-reduction: much faster on 2048-d embeddings, same picture
        x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    init = "pca" if x.shape[1] >= 2 else "random"  # PCA init needs two input dimensions
    tsne = TSNE(n_components=2, perplexity=perplexity, init=init, learning_rate="auto", random_state=seed)
    # One OpenMP thread: the Barnes-Hut gradient's per-iteration thread sync dominated (3x slower on a
    # busy 2-core box, 40 ms/iteration even for 15 points), and a fixed thread count keeps runs reproducible.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x)


def tsne_png(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    title: str,
    seed: int = 0,
    max_points: int = 1500,
) -> bytes:
    """t-SNE scatter of learned features coloured by true class (the paper's figure of feature separability).

    Larger sets are subsampled (seeded) to max_points: t-SNE is quadratic-ish and the picture does not
    change, while the report must be produced in seconds on 2 cores.
    """
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} feature rows but {y.shape[0]} labels")
    if x.shape[0] > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_points, replace=False))
        x, y = x[idx], y[idx]
    emb = tsne_embedding(x, seed=seed) if len(x) else np.zeros((0, 2))
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    cmap = _class_colours(len(class_names))
    for c, name in enumerate(class_names):
        m = y == c
        if m.any():
            ax.scatter(emb[m, 0], emb[m, 1], s=6, color=cmap[c], label=name, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    if len(emb):
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return _png(fig)


def _class_colours(n: int) -> list[tuple[float, float, float, float]]:
    """Distinct qualitative colours for the 12-13 classes of both datasets.

    tab20 comes in dark/light pairs of one hue; taking the dark ones first keeps neighbours distinguishable.
    """
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [colormaps["tab20"](order[i % 20]) for i in range(n)]
