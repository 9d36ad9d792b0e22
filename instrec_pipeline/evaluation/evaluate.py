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
from instrec_pipeline.evaluation.metrics import score
from instrec_pipeline.evaluation.multilabel import tune_thresholds
from instrec_pipeline.evaluation.probes import linear_probe
from instrec_pipeline.evaluation.report import ModelResult, Report, build_report
from instrec_pipeline.models import AUDIO_TITLES, LateFusionNet
from instrec_pipeline.store import FRAMES, logmel_modality_name
from instrec_pipeline.store.layout import Layout, read_csv
from instrec_pipeline.training.audio import audio_embeddings, audio_probs
from instrec_pipeline.training.data import load_split
from instrec_pipeline.training.fusion import EVAL_BATCH, FusionInputs, fusion_probs, stack_batch
from instrec_pipeline.training.runs import Unimodal, history_arrays, load_audio, load_fusion
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
) -> Report:
    """Test-split predictions of every model → :func:`build_report` (files under the dataset's report dir).

    Multi-label datasets also score the val split, only to tune each row's per-class thresholds there.
    """
    fusion, fusion_meta = load_fusion(layout, dataset, device)
    uni = Unimodal.load(layout, dataset, fusion_meta["audio_model"], device)
    results = _results(layout, dataset, "test", classes, audio_names, uni, (fusion, fusion_meta), device)
    inputs = {r.key: r for r in results if r.key in (uni.audio_name, "video")}
    if uni.audio_cfg.multilabel:  # scores only: no embeddings for t-SNE from val
        val = _results(
            layout, dataset, "val", classes, audio_names, uni, (fusion, fusion_meta), device, False
        )
        for r, v in zip(results, val, strict=True):
            r.thresholds = tune_thresholds(v.y_true, v.probs)
    return build_report(
        dataset, classes, results, out_dir or layout.report_dir(dataset), paper_dataset,
        provenance={**provenance(layout, dataset, uni), **(extra_provenance or {})},
        comparisons=[] if uni.audio_cfg.multilabel else [("fusion", "score_average"),
                                                         ("fusion", _best(inputs))],
    )  # fmt: skip


def _best(rows: dict[str, ModelResult]) -> str:
    """The unimodal input the fusion must beat: the better of its audio net and the video model."""
    return max(rows, key=lambda k: score(rows[k].y_true, rows[k].probs).hit1)


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
        "frames": ", ".join(f"{k} {frames[k]}" for k in ("fps", "resize", "crop", "codec", "quality")
                            if k in frames),
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
    fused: tuple[LateFusionNet, dict],
    device: torch.device,
    features: bool = True,
) -> list[ModelResult]:
    """One split's rows: each audio model, video, fusion, score averaging, fusion without each modality;
    with ``features``, also the learned embeddings the report's t-SNE plots."""
    n = len(classes)
    multilabel = uni.audio_cfg.multilabel
    fusion, fusion_meta = fused
    data = uni.split(layout, dataset, split, classes)
    y = data.labels
    results: list[ModelResult] = []
    audio_main = None
    weights = layout.features.modality(dataset, "train", uni.embeddings).params.get("weights")
    marks = ("random Inception weights",) if weights == "random" else ()
    floors = not multilabel and features  # the test split's report (val only tunes thresholds)
    train = uni.split(layout, dataset, "train", classes) if floors else None
    for name in audio_names:
        model, cfg, meta = load_audio(layout, dataset, name, device)
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
        )
    )

    def fused_probs(**remove: bool) -> np.ndarray:
        return fusion_probs(fusion, inputs, n, device, multilabel=multilabel, **remove)

    results.append(
        ModelResult(
            "fusion",
            f"Late fusion ({uni.audio_name} + video)",
            y,
            fused_probs(),
            history_arrays(fusion_meta),
            _fused_embeddings(fusion, inputs, device) if features else None,
            floors=("score_average", uni.audio_name, "video"),
            marks=marks,
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
