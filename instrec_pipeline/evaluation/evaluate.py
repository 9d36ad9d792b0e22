"""Score every trained model of a dataset on its test split and build the report.

Rows: the audio model(s), the video model, the late fusion, score averaging of the unimodal models
(the AugLi-style baseline), and the fusion with audio removed and with video removed (zeros).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instrec_pipeline.evaluation.report import ModelResult, Report, build_report
from instrec_pipeline.layout import Layout
from instrec_pipeline.models import AUDIO_TITLES
from instrec_pipeline.training.audio import audio_embeddings, audio_probs
from instrec_pipeline.training.data import load_split
from instrec_pipeline.training.fusion import fusion_probs, stack_batch
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
) -> Report:
    """Test-split predictions of every model → :func:`build_report` (files under the dataset's report dir)."""
    n = len(classes)
    fusion, fusion_meta = load_fusion(layout, dataset, device)
    uni = Unimodal.load(layout, dataset, fusion_meta["audio_model"], device)
    test = uni.split(layout, dataset, "test", classes)
    y = test.labels
    results: list[ModelResult] = []
    audio_main = None
    for name in audio_names:
        model, cfg, meta = load_audio(layout, dataset, name, device)
        data = test if cfg.mel == uni.audio_cfg.mel else load_split(layout, dataset, "test", classes, cfg.mel)
        probs = audio_probs(model, data, cfg, n, device)
        results.append(
            ModelResult(
                name,
                f"{AUDIO_TITLES.get(name, name)} + {cfg.strategy}",
                y,
                probs,
                history_arrays(meta),
                _stack(audio_embeddings(model, data, cfg, device), y, test.video_ids),
            )
        )
        if name == uni.audio_name:
            audio_main = probs
    inputs = uni.fusion_inputs(test, device)
    p_video = video_probs(uni.video, test, uni.norm, n, device)
    clip_frames = {v: f.mean(0) for v, f in inputs.video.items()}
    results.append(
        ModelResult(
            "video",
            f"Video: Inception v3 frames (k={uni.video_meta['config']['k']})",
            y,
            p_video,
            history_arrays(uni.video_meta),
            _stack(clip_frames, y, test.video_ids),
        )
    )
    v, a = stack_batch(inputs, np.arange(len(y)), fusion.k, fusion.video_dim, fusion.audio_dim, rng=None)
    with torch.no_grad():
        fused_emb = fusion.embed(torch.from_numpy(v).to(device), torch.from_numpy(a).to(device)).cpu().numpy()
    results.append(
        ModelResult(
            "fusion",
            f"Late fusion ({uni.audio_name} + video)",
            y,
            fusion_probs(fusion, inputs, n, device),
            history_arrays(fusion_meta),
            fused_emb,
        )
    )
    if audio_main is not None:
        results.append(
            ModelResult("score_average", "Score averaging (audio, video)", y, (audio_main + p_video) / 2)
        )
    results.append(
        ModelResult(
            "fusion_no_audio",
            "Late fusion, audio removed (zeros)",
            y,
            fusion_probs(fusion, inputs, n, device, use_audio=False),
        )
    )
    results.append(
        ModelResult(
            "fusion_no_video",
            "Late fusion, video removed (zeros)",
            y,
            fusion_probs(fusion, inputs, n, device, use_video=False),
        )
    )
    return build_report(dataset, classes, results, out_dir or layout.report_dir(dataset), paper_dataset)


def _stack(per_video: dict[str, np.ndarray], y: np.ndarray, ids: list[str]) -> np.ndarray | None:
    """Clip features for t-SNE, for the videos that have them (zeros for the rest, aligned with ``y``)."""
    if not per_video:
        return None
    dim = next(iter(per_video.values())).shape[-1]
    return np.stack([per_video.get(v, np.zeros(dim, np.float32)) for v in ids])
