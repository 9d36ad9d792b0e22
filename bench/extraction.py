"""Extraction benchmark: prints figures, asserts nothing (a benchmark, not a test).

    .venv/bin/python bench/extraction.py [--out bench/out] [--videos 8] [--seconds 20]

All figures come from one run over one generated corpus of real containers (h264/aac mp4, 640×360,
25 fps, stereo 44.1 kHz):

a. demux wall time ÷ the ffmpeg floor (the same ffmpeg commands, output discarded, same parallelism);
b. log-mel throughput (torchaudio) ÷ librosa's on the same audio (CPU);
c. embedding throughput inside the pipeline ÷ a bare ``model(x)`` loop, same batch size and dtype;
d. end-to-end extraction ÷ a video_features-style baseline (OpenCV reading every frame, batch-1 CNN);
e. cost per video with 10 vs 40 videos; peak RSS for a 30-s vs a 10-min video.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import torch

from instrec_pipeline.features.logmel import CHOI, MEL_INPUTS, log_mel
from instrec_pipeline.features.partition import demux_partition, embedding_partition, logmel_partition
from instrec_pipeline.features.visual import FrameEmbedder
from instrec_pipeline.media.demux import DemuxParams, _Job
from instrec_pipeline.store import FeatureStore

PARAMS = DemuxParams(sample_rates=(12000, 22050))
WORKERS = 2


def make_video(path: Path, seconds: float, seed: int) -> Path:
    """A real h264/aac mp4 with moving content and a tone mix (encoding is not what is measured)."""
    if path.exists():
        return path
    video = ffmpeg.input(f"testsrc2=size=640x360:rate=25:duration={seconds}", f="lavfi").video.filter(
        "hue", h=seed * 37 % 360
    )
    audio = ffmpeg.input(
        f"sine=frequency={220 + 40 * seed}:sample_rate=44100:duration={seconds}", f="lavfi"
    ).audio.filter("aformat", channel_layouts="stereo")
    out = ffmpeg.output(video, audio, str(path), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p",
                        acodec="aac", t=seconds)  # fmt: skip
    out.overwrite_output().run(quiet=True)
    return path


def raw_table(paths: list[Path]) -> pd.DataFrame:
    return pd.DataFrame({"video_id": [p.stem for p in paths], "raw_path": [str(p) for p in paths],
                         "error": [""] * len(paths)})  # fmt: skip


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def ffmpeg_floor(paths: list[Path]) -> float:
    """The same one-pass ffmpeg commands the pipeline runs, frames piped to nothing, audio to scratch."""

    def one(path: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            args, _ = _Job(path, PARAMS, with_audio=True)._command(Path(tmp))
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def extract(paths: list[Path], root: Path, embedder: FrameEmbedder) -> dict[str, float]:
    """The pipeline's extraction stages on one partition; seconds per stage."""
    group = FeatureStore(root).group("bench", "train")
    t = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        t["demux"], _ = timed(demux_partition, raw_table(paths), group, PARAMS, pool, root / "tmp")
    t["log_mel"] = sum(timed(logmel_partition, group, mel, "cpu")[0] for mel in MEL_INPUTS.values())
    t["embeddings"], _ = timed(embedding_partition, group, embedder)
    return t


def bare_model_loop(embedder: FrameEmbedder, n_frames: int) -> float:
    """Frames/s of ``model(x)`` alone on ready tensors, same batch size and dtype."""
    x = torch.rand(embedder.batch_size, 3, PARAMS.crop, PARAMS.crop, device=embedder.device)
    x = x.contiguous(memory_format=torch.channels_last)  # the model's layout: a fair bare loop
    batches = max(1, n_frames // embedder.batch_size)
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=embedder.cuda):
        embedder.model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            embedder.model(x)
        if embedder.cuda:
            torch.cuda.synchronize()
    return batches * embedder.batch_size / (time.perf_counter() - start)


def opencv_baseline(paths: list[Path], model: torch.nn.Module) -> float:
    """video_features style: OpenCV decodes every frame, one frame per second goes through the CNN alone."""
    import cv2

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    start = time.perf_counter()
    for path in paths:
        cap = cv2.VideoCapture(str(path))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % round(fps) == round(fps) // 2:
                rgb = cv2.cvtColor(cv2.resize(frame, (455, 256)), cv2.COLOR_BGR2RGB)[16:240, 115:339]
                x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - mean) / std
                with torch.inference_mode():
                    model(x)
            i += 1
        cap.release()
        # audio as the 2017 code did: librosa.load of the decoded track, then the mel spectrogram
        audio = decode_audio(path)
        log_mel(audio, CHOI)
    return time.perf_counter() - start


def decode_audio(path: Path) -> np.ndarray:
    out, _ = ffmpeg.input(str(path)).output("pipe:", format="f32le", ac=1, ar=12000).run(quiet=True)
    return np.frombuffer(out, np.float32)


def logmel_vs_librosa(paths: list[Path]) -> tuple[float, float]:
    import librosa

    audio = [decode_audio(p) for p in paths]
    seconds = sum(len(a) for a in audio) / CHOI.sample_rate
    log_mel(audio[0][:12000], CHOI)  # warm-up
    ours, _ = timed(lambda: [log_mel(a, CHOI) for a in audio])
    ref, _ = timed(lambda: [librosa.power_to_db(librosa.feature.melspectrogram(
        y=a, sr=CHOI.sample_rate, n_fft=CHOI.n_fft, hop_length=CHOI.hop, n_mels=CHOI.n_mels), top_db=80)
        for a in audio])  # fmt: skip
    return seconds / ours, seconds / ref


_RSS_CHILD = """
import json, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pandas as pd
from instrec_pipeline.features.logmel import MEL_INPUTS
from instrec_pipeline.features.partition import embedding_partition, logmel_partition
from instrec_pipeline.store import FeatureStore
from instrec_pipeline.features.visual import FrameEmbedder
from instrec_pipeline.media.demux import DemuxParams
from instrec_pipeline.features.partition import demux_partition
path, root = Path(sys.argv[1]), Path(tempfile.mkdtemp())
group = FeatureStore(root).group("rss", "train")
raw = pd.DataFrame({"video_id": ["v"], "raw_path": [str(path)], "error": [""]})
with ThreadPoolExecutor(1) as pool:
    demux_partition(raw, group, DemuxParams(sample_rates=(12000, 22050)), pool, root / "tmp")
for mel in MEL_INPUTS.values():
    logmel_partition(group, mel, "cpu")
embedding_partition(group, FrameEmbedder("random", "cpu", 32))
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork + exec into ru_maxrss.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(json.dumps({"peak_rss_mb": int(hwm) / 1024}))
"""


def peak_rss(path: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}")
    paths = [make_video(corpus / f"c{i:02d}_{args.seconds:g}s.mp4", args.seconds, i)
             for i in range(args.videos)]  # fmt: skip
    many = [make_video(corpus / f"m{i:02d}.mp4", 6, i) for i in range(40)]
    long = make_video(corpus / "long_600s.mp4", 600, 1)
    short = make_video(corpus / "short_30s.mp4", 30, 2)
    embedder = FrameEmbedder("random", "auto", args.batch_size)
    embedder.embed(
        np.zeros((args.batch_size, PARAMS.crop, PARAMS.crop, 3), np.uint8)
    )  # warm-up, as the bare loop
    n_frames = args.videos * round(args.seconds)
    print(
        f"corpus: {args.videos} × {args.seconds:.0f} s mp4 (h264/aac, 640×360, 25 fps); "
        f"device {embedder.device}"
    )

    floor = ffmpeg_floor(paths)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        stages = extract(paths, Path(tmp), embedder)
    ours_total = sum(stages.values())
    print(
        f"a. demux {stages['demux']:.2f} s vs ffmpeg floor {floor:.2f} s → "
        f"ratio {stages['demux'] / floor:.2f}"
        "  (target ≤ 1.15)"
    )

    ours_rate, librosa_rate = logmel_vs_librosa(paths)
    print(
        f"b. log-mel {ours_rate:,.0f} s of audio/s (torchaudio) vs librosa {librosa_rate:,.0f} → "
        f"{ours_rate / librosa_rate:.1f}×  (target ≥ 5)"
    )

    pipeline_fps = n_frames / stages["embeddings"]
    bare_fps = bare_model_loop(embedder, n_frames)
    print(
        f"c. embeddings in the pipeline {pipeline_fps:.1f} frames/s vs bare model(x) {bare_fps:.1f} → "
        f"{pipeline_fps / bare_fps:.2f}  (target ≥ 0.9; batch {args.batch_size}, float32)"
    )

    baseline = opencv_baseline(paths, embedder.model.cpu())
    embedder.model.to(embedder.device)
    print(
        f"d. end-to-end extraction {ours_total:.1f} s (demux {stages['demux']:.1f}, log-mel "
        f"{stages['log_mel']:.1f}, embeddings {stages['embeddings']:.1f}) vs OpenCV + batch-1 CNN "
        f"{baseline:.1f} s → {baseline / ours_total:.2f}× faster  (target ≥ 3)"
    )

    per_video = []
    for subset in (many[:10], many):
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            per_video.append(sum(extract(subset, Path(tmp), embedder).values()) / len(subset))
    print(
        f"e. cost per video: {per_video[0]:.2f} s with 10 videos, {per_video[1]:.2f} s with 40 → ratio "
        f"{per_video[1] / per_video[0]:.2f}  (target ≤ 1.1)"
    )
    rss_short, rss_long = peak_rss(short), peak_rss(long)
    print(
        f"   peak RSS: {rss_short:.0f} MB for a 30-s video, {rss_long:.0f} MB for a 10-min video → ratio "
        f"{rss_long / rss_short:.2f}  (target ≤ 1.3)"
    )
    print(f"(this process: max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
