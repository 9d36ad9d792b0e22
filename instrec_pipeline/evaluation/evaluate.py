"""Score every trained model of a dataset on its test split and build the report.

Rows: the audio model(s), the video model, the late fusion, score averaging of the unimodal models
(the AugLi-style baseline), and the fusion with audio removed and with video removed (zeros).
Multi-label datasets: sigmoid scores, per-class thresholds tuned on val for every row (never on test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.evaluation.metrics import hit_at_k, score
from instrec_pipeline.evaluation.multilabel import pr_auc_macro, tune_thresholds
from instrec_pipeline.evaluation.paper import Setup
from instrec_pipeline.evaluation.probes import linear_probe
from instrec_pipeline.evaluation.report import ModelResult, Report, build_report
from instrec_pipeline.models import AUDIO_TITLES, LateFusionNet
from instrec_pipeline.store import FRAMES, logmel_modality_name
from instrec_pipeline.store.layout import Layout, read_csv
from instrec_pipeline.training.audio import audio_embeddings, audio_probs
from instrec_pipeline.training.data import load_split
from instrec_pipeline.training.fusion import EVAL_BATCH, FusionInputs, stack_batch
from instrec_pipeline.training.runs import (
    FUSION,
    FUSION_INSAMPLE,
    TrainedFusion,
    Unimodal,
    history_arrays,
    load_audio,
    load_fusion,
    replicate,
)
from instrec_pipeline.training.video import video_probs


def evaluate_dataset(
    layout: Layout,
    dataset: str,
    classes: list[str],
    audio_names: list[str],
    device: torch.device,
    out_dir: Path | None = None,
    paper_dataset: str | None = None,
    extra_provenance: dict[str, str] | None = None,
    seeds: int = 1,
) -> Report:
    """Test-split predictions of every model → :func:`build_report` (files under the dataset's report dir).

    Multi-label datasets also score the val split, only to tune each row's per-class thresholds there.
    With ``seeds`` > 1 every row also carries its headline score for each seed replicate.
    """
    audio_name = load_fusion(layout, dataset, device).meta["audio_model"]
    uni = Unimodal.load(layout, dataset, audio_name, device)
    fusions = _fusions(layout, dataset, uni, device)
    results = _results(layout, dataset, "test", classes, audio_names, uni, fusions, device)
    inputs = {r.key: r for r in results if r.key in (uni.audio_name, "video")}
    if uni.audio_cfg.multilabel:  # scores only: no embeddings for t-SNE from val
        val = _results(layout, dataset, "val", classes, audio_names, uni, fusions, device, False)
        for r, v in zip(results, val, strict=True):
            r.thresholds = tune_thresholds(v.y_true, v.probs)
    if seeds > 1:
        _add_replicates(layout, dataset, classes, audio_names, uni.audio_name, results, seeds, device)
    return build_report(
        dataset, classes, results, out_dir or layout.report_dir(dataset), paper_dataset,
        provenance={**provenance(layout, dataset, uni), **(extra_provenance or {})},
        comparisons=[] if uni.audio_cfg.multilabel else [("fusion", "score_average"),
                                                         ("fusion", _best(inputs)),
                                                         ("fusion", "fusion_insample")],
    )  # fmt: skip


def _add_replicates(
    layout: Layout, dataset: str, classes: list[str], audio_names: list[str], audio_name: str,
    results: list[ModelResult], seeds: int, device: torch.device,
) -> None:  # fmt: skip
    """Each row's headline test score for every seed replicate (the main models are replicate 0)."""
    by_seed = [{r.key: _headline(r) for r in results}]
    for i in range(1, seeds):
        uni = Unimodal.load(layout, dataset, audio_name, device, replicate(i))
        fusions = _fusions(layout, dataset, uni, device)
        rows = _results(layout, dataset, "test", classes, audio_names, uni, fusions, device, False)
        by_seed.append({r.key: _headline(r) for r in rows})
    for r in results:
        if all(r.key in scores for scores in by_seed):
            r.replicates = tuple(scores[r.key] for scores in by_seed)


def _fusions(
    layout: Layout, dataset: str, uni: Unimodal, device: torch.device
) -> tuple[TrainedFusion, TrainedFusion | None]:
    """The fusion built on ``uni``'s nets (same replicate) and its in-sample variant, if trained."""
    insample = uni.tag + FUSION_INSAMPLE
    kept = layout.model(dataset, insample).exists()
    return (
        load_fusion(layout, dataset, device, uni.tag + FUSION, uni),
        load_fusion(layout, dataset, device, insample, uni) if kept else None,
    )


def _headline(r: ModelResult) -> float:
    """The score a row is ranked by: Hit@1, or macro PR-AUC (threshold-free) for multi-label rows."""
    y = np.asarray(r.y_true)
    return float(pr_auc_macro(y, r.probs)) if y.ndim == 2 else hit_at_k(y, r.probs, 1)


def _best(rows: dict[str, ModelResult]) -> str:
    """The unimodal input the fusion must beat: the better of its audio net and the video model."""
    return max(rows, key=lambda k: score(rows[k].y_true, rows[k].probs).hit1)


#: The frame parameters the provenance shows (old stores lack ``geometry``: they kept the aspect ratio).
FRAME_SETTINGS = ("fps", "resize", "crop", "geometry", "codec", "quality")


def provenance(layout: Layout, dataset: str, uni: Unimodal) -> dict[str, str]:
    """What produced the numbers: weights, extraction parameters, and how much of each split was obtained."""
    store = layout.features
    emb_modality = store.modality(dataset, "train", uni.embeddings)
    emb = emb_modality.params
    frames = store.modality(dataset, "train", FRAMES).params
    mel = store.modality(dataset, "train", logmel_modality_name(uni.audio_cfg.mel.name))
    obtained = []
    for split in SPLITS:
        wanted = len(read_csv(layout.table(dataset, split, "manifest")))
        obtained.append(f"{split} {len(store.modality(dataset, split, FRAMES))}/{wanted}")
    return {
        "Inception v3 weights": f"{emb.get('weights')}: {emb.get('weights_source')} "
        f"(digest {emb.get('weights_digest')}); embeddings `{uni.embeddings}` {emb_modality.params_digest}",
        "frames": ", ".join(f"{k} {frames[k]}" for k in FRAME_SETTINGS if k in frames),
        f"log-mel ({uni.audio_cfg.mel.name})": f"parameters {mel.params_digest}",
        "videos obtained (stored / manifest)": ", ".join(obtained),
    }


def _results(
    layout: Layout,
    dataset: str,
    split: str,
    classes: list[str],
    audio_names: list[str],
    uni: Unimodal,
    fusions: tuple[TrainedFusion, TrainedFusion | None],
    device: torch.device,
    features: bool = True,
) -> list[ModelResult]:
    """One split's rows: each audio model, video, fusion (and its in-sample variant), score averaging,
    fusion without each modality; with ``features``, also the learned embeddings the report's t-SNE plots."""
    n = len(classes)
    multilabel = uni.audio_cfg.multilabel
    fused, insample = fusions
    data = uni.split(layout, dataset, split, classes)
    y = data.labels
    results: list[ModelResult] = []
    audio_main = None
    weights = layout.features.modality(dataset, "train", uni.embeddings).params.get("weights")
    marks = ("random Inception weights",) if weights == "random" else ()
    floors = not multilabel and features  # the test split's report (val only tunes thresholds)
    train = uni.split(layout, dataset, "train", classes) if floors else None
    for name in audio_names:
        model, cfg, meta = load_audio(layout, dataset, name, device, uni.tag)
        own = data if cfg.mel == uni.audio_cfg.mel else load_split(layout, dataset, split, classes, cfg.mel,
                                                                   multilabel)  # fmt: skip
        probs = audio_probs(model, own, cfg, n, device)
        results.append(
            ModelResult(
                name,
                f"{AUDIO_TITLES.get(name, name)} + {cfg.strategy}",
                y,
                probs,
                history_arrays(meta),
                _stack(audio_embeddings(model, own, cfg, device), y, data.video_ids) if features else None,
                floors=("probe_audio",) if floors else (),
                setup=Setup(strategy=cfg.strategy),
            )
        )
        if name == uni.audio_name:
            audio_main = probs
    inputs = uni.fusion_inputs(data, device)
    p_video = video_probs(uni.video, data, uni.norm, n, device, multilabel)
    clip_frames = {v: f.mean(0) for v, f in inputs.video.items()}
    results.append(
        ModelResult(
            "video",
            f"Video: Inception v3 frames (k={uni.video_meta['config']['k']})",
            y,
            p_video,
            history_arrays(uni.video_meta),
            _stack(clip_frames, y, data.video_ids) if features else None,
            floors=("probe_video",) if floors else (),
            marks=marks,
            setup=Setup(k=uni.video_meta["config"]["k"]),
        )
    )

    member_inputs = fused.inputs(data, device)

    def fused_probs(**remove: bool) -> np.ndarray:
        return fused.probs(member_inputs, device, **remove)

    results.append(
        ModelResult(
            "fusion",
            f"Late fusion ({uni.audio_name} + video; {_trained_on(fused.meta)})",
            y,
            fused_probs(),
            history_arrays(fused.meta),
            _fused_embeddings(fused.model, member_inputs[0], device) if features else None,
            floors=("score_average", uni.audio_name, "video"),
            marks=marks,
            setup=_fusion_setup(uni, fused),
        )
    )
    if insample is not None:
        results.append(
            ModelResult(
                "fusion_insample",
                "Late fusion, in-sample inputs (the paper's protocol)",
                y,
                insample.probs(insample.inputs(data, device), device),
                history_arrays(insample.meta),
                marks=marks,
                setup=_fusion_setup(uni, insample),
            )
        )
    if audio_main is not None:
        results.append(
            ModelResult(
                "score_average", "Score averaging (audio, video)", y, (audio_main + p_video) / 2, marks=marks
            )
        )
    results.append(
        ModelResult("fusion_no_audio", "Late fusion, audio removed (zeros)", y, fused_probs(use_audio=False),
                    marks=marks)  # fmt: skip
    )
    results.append(
        ModelResult("fusion_no_video", "Late fusion, video removed (zeros)", y, fused_probs(use_video=False),
                    marks=marks)  # fmt: skip
    )
    if train is not None:
        title = "Floor: logistic regression on {} (mean, std per video)"
        results.append(ModelResult("probe_audio", title.format(f"{uni.audio_cfg.mel.name} log-mel bands"), y,
                                   linear_probe(train, data, lambda d: d.audio, n)))  # fmt: skip
        p_probe = linear_probe(train, data, lambda d: d.frames, n)
        results.append(ModelResult("probe_video", title.format("Inception embeddings"), y, p_probe,
                                   marks=marks))  # fmt: skip
    return results


def _fusion_setup(uni: Unimodal, fused: TrainedFusion) -> Setup:
    """What the paper comparison of a fusion row needs: its audio net, that net's strategy, and k."""
    meta = fused.meta
    return Setup(strategy=uni.audio_cfg.strategy, k=meta["config"]["k"], audio=meta["audio_model"])


def _trained_on(meta: dict) -> str:
    """How a fusion's training inputs were produced, for its row title."""
    cfg = meta["config"]
    return {
        "oof": f"trained on out-of-fold inputs, {cfg.get('folds')} folds",
        "holdout": f"trained on a held-out {cfg.get('holdout', 0):.0%} of train",
    }.get(cfg.get("inputs", "insample"), "trained on the unimodal nets' own train inputs")


@torch.no_grad()
def _fused_embeddings(fusion: LateFusionNet, inputs: FusionInputs, device: torch.device) -> np.ndarray:
    """The fusion's penultimate features per clip (k uniformly spaced frames), for t-SNE."""
    out = []
    for start in range(0, len(inputs.video_ids), EVAL_BATCH):
        idx = np.arange(start, min(start + EVAL_BATCH, len(inputs.video_ids)))
        v, a = stack_batch(inputs, idx, fusion.k, fusion.video_dim, fusion.audio_dim, rng=None)
        out.append(fusion.embed(torch.from_numpy(v).to(device), torch.from_numpy(a).to(device)).cpu().numpy())
    return np.concatenate(out)


def _stack(per_video: dict[str, np.ndarray], y: np.ndarray, ids: list[str]) -> np.ndarray | None:
    """Clip features for t-SNE, for the videos that have them (zeros for the rest, aligned with ``y``)."""
    if not per_video:
        return None
    dim = next(iter(per_video.values())).shape[-1]
    return np.stack([per_video.get(v, np.zeros(dim, np.float32)) for v in ids])
