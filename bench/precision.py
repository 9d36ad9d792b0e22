"""Does bf16 change the results? The demo's models trained and scored twice, each with several seeds:
once wholly in float32, once wholly in bf16 — the frame embeddings too. Prints figures, asserts nothing.

    .venv/bin/python bench/precision.py [--root data] [--dataset demo] [--seeds 3] [--models choi,han,video]

Reads an extracted store (``make demo`` fills ``./data``) and writes nothing into it: every split's frames
are embedded again at each precision (same weights, the pipeline's runtime) into a scratch copy of the
dataset's features, so the video model's float32 arm never sees a bf16 embedding. Reported per model and
precision: test Hit@1 and macro F1 over the seeds (mean ± sd), seconds per fit, and the difference
bf16 − fp32 beside the seed-to-seed spread: bf16 is "within seed noise" when the difference of the means
is smaller than the larger of the two standard deviations (or both are identical).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instrec_pipeline.datasets.registry import datasets  # noqa: E402
from instrec_pipeline.evaluation.metrics import score  # noqa: E402
from instrec_pipeline.features.partition import embedding_partition, inception_weights_of  # noqa: E402
from instrec_pipeline.features.visual import FrameEmbedder, resolve_device, resolve_precision  # noqa: E402
from instrec_pipeline.store import EMBEDDINGS  # noqa: E402
from instrec_pipeline.store.layout import Layout  # noqa: E402
from instrec_pipeline.training.audio import AudioTrainConfig, audio_probs, train_audio  # noqa: E402
from instrec_pipeline.training.data import load_split  # noqa: E402
from instrec_pipeline.training.video import VideoTrainConfig, train_video, video_probs  # noqa: E402

SPLITS = ("train", "val", "test")


def embedded_copy(layout: Layout, dataset: str, scratch: Path) -> Layout:
    """A layout whose features are a copy of ``dataset``'s, each split's frames embedded again under
    modality ``embeddings_<precision>`` for both precisions, with the stored embeddings' weights; its
    tables are the original ones (linked)."""
    copy = Layout(scratch)
    shutil.copytree(layout.features.root / "features" / dataset, scratch / "features" / dataset)
    (scratch / "tables").mkdir()
    (scratch / "tables" / dataset).symlink_to(layout.root / "tables" / dataset)
    params = copy.features.modality(dataset, "train", EMBEDDINGS).params
    weights, seed = inception_weights_of(params)
    for precision in ("fp32", "bf16"):
        embedder = FrameEmbedder(weights, "auto", seed=seed, precision=precision, runtime="auto")
        began = time.perf_counter()
        for split in SPLITS:
            embedding_partition(copy.features.group(dataset, split), embedder, f"{EMBEDDINGS}_{precision}")
        print(f"  embeddings {precision} ({embedder.runtime}, weights {embedder.weights.source}): "
              f"{time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip
    return copy


def _fit_and_score(layout: Layout, dataset: str, model: str, precision: str, seed: int) -> dict[str, float]:
    """One model trained with the dataset's settings at ``precision`` and ``seed`` (the video model on the
    frames embedded at that precision), scored on test."""
    spec = datasets()[dataset]
    classes, device = list(spec.classes), resolve_device("auto")
    kind = "video" if model == "video" else "audio"
    given = spec.training.get(kind, {})
    began = time.perf_counter()
    if kind == "audio":
        cfg = replace(AudioTrainConfig(model=model), **given, precision=precision, seed=seed)
        splits = [load_split(layout, dataset, s, classes, cfg.mel) for s in SPLITS]
        net, fit = train_audio(splits[0], splits[1], len(classes), cfg, device)
        probs = audio_probs(net, splits[2], cfg, len(classes), device)
    else:
        cfg = replace(VideoTrainConfig(), **given, precision=precision, seed=seed)
        splits = [load_split(layout, dataset, s, classes, None, embeddings=f"{EMBEDDINGS}_{precision}")
                  for s in SPLITS]  # fmt: skip
        net, norm, fit, cfg = train_video(splits[0], splits[1], len(classes), cfg, device)
        probs = video_probs(net, splits[2], norm, len(classes), device)
    seconds = time.perf_counter() - began
    s = score(splits[2].labels, probs)
    return {"hit1": 100 * s.hit1, "f1": 100 * s.f1_macro, "seconds": seconds, "epochs": fit.epochs_run,
            "ran_in": fit.precision}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO / "data"))
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="choi,han,video")
    args = parser.parse_args()
    layout = Layout(Path(args.root).resolve())
    device = resolve_device("auto")
    print(f"device {device}; bf16 available here: {resolve_precision('auto', device) == 'bf16'}; "
          f"torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="precision-"))
    try:
        layout = embedded_copy(layout, args.dataset, scratch)
        for model in args.models.split(","):
            for precision in ("fp32", "bf16"):
                for seed in range(args.seeds):
                    r = _fit_and_score(layout, args.dataset, model, precision, seed)
                    rows.append({"model": model, "precision": precision, "seed": seed, **r})
                    print(
                        f"  {model:8s} {precision} seed {seed}: Hit@1 {r['hit1']:.1f}, F1 {r['f1']:.1f}, "
                        f"{r['epochs']} epochs in {r['seconds']:.0f} s (ran in {r['ran_in']})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["model", "precision"]).agg(
        hit1_mean=("hit1", "mean"), hit1_sd=("hit1", "std"), f1_mean=("f1", "mean"), f1_sd=("f1", "std"),
        s_per_fit=("seconds", "mean"),
    ).round(2)  # fmt: skip
    print(f"\n{args.dataset}: test scores over {args.seeds} seeds per precision\n{summary.to_string()}")
    print("\nbf16 − fp32 (Hit@1 points), against the seed-to-seed spread:")
    for model, part in summary.groupby(level="model"):
        fp32, bf16 = part.xs("fp32", level="precision").iloc[0], part.xs("bf16", level="precision").iloc[0]
        diff, spread = bf16.hit1_mean - fp32.hit1_mean, np.nanmax([fp32.hit1_sd, bf16.hit1_sd])
        verdict = "within seed noise" if abs(diff) <= (spread if spread > 0 else 0) else "OUTSIDE seed noise"
        print(f"  {model:8s} {diff:+6.2f} (sd up to {spread:.2f}): {verdict}; "
              f"speed-up {fp32.s_per_fit / bf16.s_per_fit:.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
