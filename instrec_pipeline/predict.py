"""Predict the instrument(s) of one new video with a dataset's trained models (demux → features → models).

Extraction settings (frame sampling, crop, Inception weights) are read from the dataset's feature store,
so the new video is processed exactly as the training videos were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from instrec_pipeline.evaluation.multilabel import DEFAULT_THRESHOLD
from instrec_pipeline.features.logmel import MEL_INPUTS, MelParams, log_mel
from instrec_pipeline.features.partition import inception_weights_of
from instrec_pipeline.features.visual import FrameEmbedder, resolve_device, resolve_runtime
from instrec_pipeline.media import torchcodec_frames
from instrec_pipeline.media.demux import DemuxParams, demux
from instrec_pipeline.models import AUDIO_MODELS
from instrec_pipeline.store import FRAMES, audio_modality_name
from instrec_pipeline.store.layout import Layout
from instrec_pipeline.training.audio import audio_probs
from instrec_pipeline.training.data import SplitData
from instrec_pipeline.training.runs import Unimodal, load_audio, load_fusion
from instrec_pipeline.training.video import video_probs


@dataclass
class Prediction:
    classes: list[str]
    probs: pd.DataFrame  # rows: modality/model, columns: classes
    multilabel: bool = False
    #: Multi-label datasets: the report's val-tuned thresholds (rows: report model keys), when there is one.
    thresholds: pd.DataFrame | None = None

    def top(self, row: str = "fusion", k: int = 3) -> list[tuple[str, float]]:
        ranked = self.probs.loc[row].sort_values(ascending=False)
        return list(ranked.head(k).items())

    def labels(self, row: str = "fusion") -> list[str]:
        """Multi-label decision: the classes whose score reaches the row's threshold (0.5 if untuned)."""
        key = row.removeprefix("audio: ").replace(" ", "_")
        have = self.thresholds is not None and key in self.thresholds.index
        thr = self.thresholds.loc[key] if have else pd.Series(DEFAULT_THRESHOLD, index=self.classes)
        scores = self.probs.loc[row]
        return [c for c in self.classes if scores[c] >= thr[c]]


def _embedder_for(
    layout: Layout, dataset: str, device: str, embeddings: str
) -> tuple[FrameEmbedder, DemuxParams]:
    """The Inception v3 (and frame sampling) behind the embeddings the video model was trained on."""
    store = layout.features
    frames = store.modality(dataset, "train", FRAMES).params
    stored = store.modality(dataset, "train", embeddings).params
    weights, seed = inception_weights_of(stored)
    group = store.group(dataset, "train", "r")
    rates = sorted({m.sample_rate for m in MEL_INPUTS.values()})
    audio_rates = tuple(r for r in rates if audio_modality_name(r) in group)
    # The stored decoder where it can run here (torchcodec: installed), else ffmpeg (a few pixel levels off).
    decoder = "torchcodec" if str(frames.get("decoder", "ffmpeg")).startswith("torchcodec") else "ffmpeg"
    if decoder == "torchcodec" and not torchcodec_frames.available():
        decoder = "ffmpeg"
    params = DemuxParams(
        fps=frames["fps"], resize=frames["resize"], crop=frames["crop"], sample_rates=audio_rates,
        geometry=frames.get("geometry", "shorter_side"),  # stores written before the setting kept the ratio
        decoder=decoder, decode_device=str(resolve_device(device)) if decoder == "torchcodec" else "cpu",
    )
    # The stored runtime where it can run here (OpenVINO: on the CPU), else torch (within cosine 0.9999).
    runtime = str(stored.get("runtime", "torch"))
    if runtime == "openvino" and resolve_runtime("auto", resolve_device(device)) != "openvino":
        runtime = "torch"
    precision = str(stored.get("precision", "fp32"))
    return FrameEmbedder(weights, device, seed=seed, precision=precision, runtime=runtime), params


def _log_mels(audio: dict[int, np.ndarray], vid: str, mel: MelParams, device: str) -> dict[str, np.ndarray]:
    """The video's log-mel for one model input, or nothing when it has no audio (a missing modality)."""
    samples = audio.get(mel.sample_rate)
    return {vid: log_mel(samples, mel, device)} if samples is not None and len(samples) else {}


def predict_video(path: Path, layout: Layout, dataset: str, device: str = "auto") -> Prediction:
    """Probabilities per audio model, the video model, score averaging and the fusion."""
    dev = resolve_device(device)
    fused = load_fusion(layout, dataset, dev)
    classes = list(fused.meta["classes"])
    multilabel = bool(fused.meta["config"].get("multilabel"))
    uni = Unimodal.load(layout, dataset, fused.meta["audio_model"], dev)
    embedder, params = _embedder_for(layout, dataset, device, uni.embeddings)
    media = demux(path, params)
    vid = path.stem
    frames = {vid: embedder.embed(media.frames)} if len(media.frames) else {}
    rows: dict[str, np.ndarray] = {}
    for name in AUDIO_MODELS:
        try:
            model, cfg, _ = load_audio(layout, dataset, name, dev)
        except FileNotFoundError:
            continue
        data = SplitData([vid], np.zeros(1, np.int64), _log_mels(media.audio, vid, cfg.mel, str(dev)))
        rows[f"audio: {name}"] = audio_probs(model, data, cfg, len(classes), dev)[0]
    data = SplitData([vid], np.zeros(1, np.int64), frames=frames)
    rows["video"] = video_probs(uni.video, data, uni.norm, len(classes), dev, multilabel)[0]
    main_audio = rows.get(f"audio: {uni.audio_name}")
    if main_audio is not None:
        rows["score average"] = (main_audio + rows["video"]) / 2
    both = SplitData(
        [vid], np.zeros(1, np.int64), _log_mels(media.audio, vid, uni.audio_cfg.mel, str(dev)), frames
    )
    rows["fusion"] = fused.probs(fused.inputs(both, dev), dev)[0]
    thresholds = layout.report_dir(dataset) / "thresholds.csv"
    tuned = pd.read_csv(thresholds, index_col="model") if multilabel and thresholds.exists() else None
    return Prediction(classes, pd.DataFrame(rows, index=classes).T, multilabel, tuned)


def format_prediction(pred: Prediction, k: int = 3) -> str:
    lines = []
    for row in pred.probs.index:
        top = ", ".join(f"{c} {p:.1%}" for c, p in pred.top(row, k))
        if pred.multilabel:
            top = f"[{', '.join(pred.labels(row)) or 'none'}]  {top}"
        lines.append(f"{row:>16}: {top}")
    return "\n".join(lines)
