"""Extraction benchmark: prints figures, asserts nothing (a benchmark, not a test).

    .venv/bin/python bench/extraction.py [--out bench/out] [--videos 8] [--seconds 60] [--only adfgh]

All figures come from one run over one generated corpus of real containers (h264/aac mp4, 640×360,
25 fps, stereo 44.1 kHz):

a. demux wall time ÷ the ffmpeg floor (the same ffmpeg commands, built beforehand, output discarded, same
   parallelism; median of 3 back-to-back pairs); also in CPU seconds, which load distorts less;
b. log-mel throughput (torchaudio) ÷ librosa's on the same audio (CPU);
c. embedding throughput inside the pipeline ÷ the bare model on ready batches, same batch size, precision
   and runtime (medians of 3 runs each), and that model's speed-up over torch float32;
d. end-to-end extraction ÷ a video_features-style baseline (OpenCV reading every frame, batch-1 CNN);
e. cost per video with 10 vs 40 videos; peak RSS for a 30-s vs a 10-min video;
f. ffmpeg threads per process vs processes per core, on 1 and 2 cores, projected to 16;
g. training seconds per epoch, Choi, float32 vs bf16 autocast (synthetic log-mels); and for splits past
   the training budget (Choi; the video model), the share of the fit spent waiting for input, read
   in-process vs by DataLoader workers;
h. Inception v3 forward at batch 32: torch float32 / bf16 autocast / channels-last, torch.compile,
   OpenVINO float32 / bf16 (when installed), each with its worst cosine to float32 on real frames.

The machine's load average is printed with each section: on a shared machine, compare figures taken
under the same load only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import torch

from instrec_pipeline.features.logmel import CHOI, MEL_INPUTS, log_mel
from instrec_pipeline.features.partition import demux_partition, embedding_partition, logmel_partition
from instrec_pipeline.features.visual import FrameEmbedder
from instrec_pipeline.media.demux import DemuxParams, _Job, demux, demux_to_spool
from instrec_pipeline.parallel import demux_plan, usable_cores
from instrec_pipeline.store import FeatureStore, RaggedArray
from instrec_pipeline.training.data import SplitData, StoredRows
from instrec_pipeline.training.loop import FitResult

PARAMS = DemuxParams(sample_rates=(12000, 22050))
WORKERS = 2
SECTIONS = "abcdefgh"


def load() -> str:
    """The 1-minute load average, per core: what else was running while a figure was taken."""
    return f"load {os.getloadavg()[0]:.1f} on {usable_cores()} cores"


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (ffmpeg) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


def ffmpeg_floor(paths: list[Path]) -> tuple[float, float]:
    """The same one-pass ffmpeg commands the pipeline runs, frames piped to nothing, audio to scratch.

    Commands are built (and their files probed) before the clock starts, with the ffmpeg threads
    ``demux_partition`` gives its workers: the floor is the pipeline's ffmpeg alone. Returns wall and CPU
    seconds.
    """
    params = replace(PARAMS, threads=demux_plan(workers=WORKERS).threads)
    with tempfile.TemporaryDirectory() as tmp:
        commands = []
        for i, path in enumerate(paths):
            (Path(tmp) / str(i)).mkdir()
            commands.append(_Job(path, params, with_audio=True)._command(Path(tmp) / str(i))[0])

        def one(args: list[str]) -> None:
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

        start, cpu = time.perf_counter(), cpu_seconds()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, commands))
        return time.perf_counter() - start, cpu_seconds() - cpu


def timed_demux(paths: list[Path], root: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the demux stage over ``paths`` into a partition under ``root``."""
    with ThreadPoolExecutor(WORKERS) as pool:
        cpu = cpu_seconds()
        wall, _ = timed(demux_partition, raw_table(paths), FeatureStore(root).group("bench", "train"), PARAMS,
                        pool, root / "tmp")  # fmt: skip
        return wall, cpu_seconds() - cpu


def demux_ratios(paths: list[Path], out: Path, first: tuple[float, float, float, float], repeats: int = 3
                 ) -> tuple[float, float]:  # fmt: skip
    """a. Demux ÷ floor, wall and CPU, each the median of ``repeats`` pairs taken back to back (one pair
    is ~5 s, which a shared 2-core machine moves by ±4 %). ``first``: the pair already measured
    (demux wall, demux CPU, floor wall, floor CPU)."""
    walls, cpus = [first[0] / first[2]], [first[1] / first[3]]
    for _ in range(1, repeats):
        floor, floor_cpu = ffmpeg_floor(paths)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            wall, cpu = timed_demux(paths, Path(tmp))
        walls.append(wall / floor)
        cpus.append(cpu / floor_cpu)
    return statistics.median(walls), statistics.median(cpus)


def extract(paths: list[Path], root: Path, embedder: FrameEmbedder) -> dict[str, float]:
    """The pipeline's extraction stages on one partition; seconds per stage (and demux's CPU seconds)."""
    group = FeatureStore(root).group("bench", "train")
    t = {}
    t["demux"], t["demux_cpu"] = timed_demux(paths, root)
    t["log_mel"] = sum(timed(logmel_partition, group, mel, "cpu")[0] for mel in MEL_INPUTS.values())
    t["embeddings"], _ = timed(embedding_partition, group, embedder)
    return t


def embedding_rates(
    root: Path, embedder: FrameEmbedder, frames: int, first: float, repeats: int = 3
) -> tuple[float, float]:
    """c. Frames/s of the embedding stage on the extracted partition and of the bare model, each the median
    of ``repeats`` runs taken in turn (a 2-s stage on a shared 2-core machine moves by ±5 % from run to
    run). ``first``: the seconds of the stage's run in :func:`extract`; the others write to fresh names."""
    group = FeatureStore(root).group("bench", "train")
    stage, bare = [frames / first], [bare_rate(embedder, frames_batch(embedder), frames)]
    for i in range(1, repeats):
        stage.append(frames / timed(embedding_partition, group, embedder, f"embeddings_{i}")[0])
        bare.append(bare_rate(embedder, frames_batch(embedder), frames))
    return statistics.median(stage), statistics.median(bare)


def stage_total(t: dict[str, float]) -> float:
    return t["demux"] + t["log_mel"] + t["embeddings"]


def forward_rate(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, frames: int) -> float:
    """Frames/s of ``forward`` alone on a ready batch (one warm-up call first), at least ``frames`` frames."""
    batches = max(1, frames // len(x))
    with torch.inference_mode():
        forward(x)
        start = time.perf_counter()
        for _ in range(batches):
            forward(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    return batches * len(x) / (time.perf_counter() - start)


def bare_rate(embedder: FrameEmbedder, batch: np.ndarray, frames: int) -> float:
    """Frames/s of the embedder on one ready batch over and over (at least ``frames``), through the entry
    point the pipeline uses (:meth:`FrameEmbedder.embed_batches`; with OpenVINO's streams overlapping
    batches): the pipeline's bound with nothing to read or write."""
    batches = max(1, frames // len(batch))
    list(embedder.embed_batches([batch]))  # warm-up
    start = time.perf_counter()
    list(embedder.embed_batches([batch] * batches))
    return batches * len(batch) / (time.perf_counter() - start)


def frames_batch(embedder: FrameEmbedder, size: int | None = None) -> np.ndarray:
    """A batch of uint8 NHWC frames, as the store hands them to the embedder."""
    shape = (size or embedder.batch_size, PARAMS.crop, PARAMS.crop, 3)
    return np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)


def torch_input(embedder: FrameEmbedder, frames: np.ndarray, fmt: torch.memory_format) -> torch.Tensor:
    """``frames`` as torch's Inception takes them: normalised float NCHW on the device, in ``fmt``."""
    x = embedder.normalise(torch.from_numpy(frames).to(embedder.device))
    return x.contiguous(memory_format=fmt)


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


# -- f. ffmpeg threading ------------------------------------------------------------------------------
#: (cores, processes, threads each) measured; the process is pinned to the first ``cores`` cores.
THREADING = ((1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 1, 2), (2, 2, 1), (2, 2, 2), (2, 4, 1))


def demux_rate(paths: list[Path], seconds: float, cores: int, workers: int, threads: int, out: Path) -> float:
    """Seconds of video demuxed (to the spool, as the pipeline does) per wall second: ``workers`` videos
    at once with ffmpeg ``threads`` each, this process and so its ffmpegs pinned to ``cores`` cores."""
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:cores])
    params = replace(PARAMS, threads=threads)
    try:
        with tempfile.TemporaryDirectory(dir=out) as tmp, ThreadPoolExecutor(workers) as pool:
            start = time.perf_counter()
            list(pool.map(lambda item: demux_to_spool(item[1], params, Path(tmp) / str(item[0])),
                          enumerate(paths)))  # fmt: skip
            return seconds * len(paths) / (time.perf_counter() - start)
    finally:
        os.sched_setaffinity(0, allowed)


def threading_table(paths: list[Path], seconds: float, out: Path, repeats: int = 2) -> None:
    """f. Measured on 1 and 2 cores (median of ``repeats``, configurations interleaved), projected to 16."""
    if len(os.sched_getaffinity(0)) < 2:
        print("f. ffmpeg threading skipped: fewer than 2 usable cores")
        return
    runs: dict[tuple[int, int, int], list[float]] = {c: [] for c in THREADING}
    for _ in range(repeats):
        for c in THREADING:
            runs[c].append(demux_rate(paths, seconds, *c, out))
    rate = {c: statistics.median(v) for c, v in runs.items()}
    print(f"f. ffmpeg threading: seconds of video demuxed per second ({len(paths)} × {seconds:g} s videos, "
          f"median of {repeats}; {load()})")  # fmt: skip
    print("   cores  processes × threads   video s/s   per core")
    for (cores, workers, threads), r in rate.items():
        print(f"   {cores:>5}  {workers:>9} × {threads:<7}   {r:9.1f}   {r / cores:8.1f}")
    one = rate[(1, 1, 1)]
    speedup2 = rate[(2, 1, 2)] / one  # one ffmpeg, 1 → 2 threads on 1 → 2 cores
    serial = min(1.0, max(0.0, 2 / speedup2 - 1))  # Amdahl's serial fraction from that step
    projected = {
        "16 × 1 thread (processes share nothing: 16 × one core's rate)": 16 * one,
        "8 × 2 threads (8 × one 2-thread ffmpeg on 2 cores)": 8 * rate[(2, 1, 2)],
        f"1 × 16 threads (Amdahl, serial fraction {serial:.2f} from 1 → 2 threads)":
            one / (serial + (1 - serial) / 16),
    }  # fmt: skip
    for name, r in projected.items():
        print(f"   16 (projected) {name}: {r:,.0f} video s/s")
    for cores in (1, 2, 16):
        plan = demux_plan(cores)
        if cores < 16:
            best = max((c for c in rate if c[0] == cores), key=rate.__getitem__)
            measured = f"best measured: {best[1]} × {best[2]}"
        else:
            measured = f"best projected: {max(projected, key=projected.__getitem__).split(' (')[0]}"
        print(f"   {cores:>2} cores: {measured}; default (demux_plan) {plan.workers} × {plan.threads}")


# -- g. training precision ---------------------------------------------------------------------------
def choi_epoch_seconds(precision: str, train_videos: int, val_videos: int) -> float:
    """Seconds per epoch (training and validation) of Choi on synthetic 1400-frame log-mels."""
    from instrec_pipeline.training.audio import AudioTrainConfig, train_audio

    def split(n: int, seed: int) -> SplitData:
        rng = np.random.default_rng(seed)
        labels = np.arange(n) % 4
        audio = {
            f"v{i}": (rng.normal(size=(1400, 96)) + 0.1 * y).astype(np.float32) for i, y in enumerate(labels)
        }
        return SplitData([f"v{i}" for i in range(n)], labels, audio=audio)

    cfg = AudioTrainConfig(model="choi", max_epochs=1, patience=5, precision=precision)
    _, fit = train_audio(split(train_videos, 0), split(val_videos, 1), 4, cfg, torch.device("cpu"))
    return fit.seconds / fit.epochs_run


def training_precision(train_videos: int = 16, val_videos: int = 8, repeats: int = 2) -> None:
    """g. float32 vs bf16 autocast, interleaved, medians."""
    from instrec_pipeline.features.visual import cpu_has_bf16

    runs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision, seconds in runs.items():
            seconds.append(choi_epoch_seconds(precision, train_videos, val_videos))
    fp32, bf16 = (statistics.median(runs[p]) for p in ("fp32", "bf16"))
    units = "" if cpu_has_bf16() else " — this CPU has no bf16 units: bf16 is emulated"
    print(f"g. training, Choi, CPU: float32 {fp32:.1f} s/epoch, bf16 autocast {bf16:.1f} s/epoch → "
          f"{fp32 / bf16:.2f}× ({train_videos} train + {val_videos} val videos of 1400×96 log-mels, "
          f"UC segments; median of {repeats}; {load()}){units}")  # fmt: skip


def stored_split(root: Path, name: str, n: int, row_shape: tuple[int, ...], rows: int) -> SplitData:
    """``n`` videos of ``rows`` synthetic rows (4 classes) written to a store under ``root`` and read back on
    demand, as training reads extracted ones; ``name`` is the modality (``audio`` or ``frames``)."""
    rng, labels = np.random.default_rng(0), np.arange(n) % 4
    group = FeatureStore(root).group("bench", f"{name}{n}")
    with RaggedArray.open(group, name, row_shape, "float32", {}) as arr:
        for i, y in enumerate(labels):
            arr.append_stream(f"v{i}", [(rng.normal(size=(rows, *row_shape)) + 0.1 * y).astype(np.float32)])
    ids = [f"v{i}" for i in range(n)]
    return SplitData(ids, labels, **{name: StoredRows(RaggedArray.read(group, name), set(ids))})


def streaming_input(
    out: Path, device: torch.device, workers: tuple[int, ...] = (0, 2), epochs: int = 3, quick: bool = False
) -> dict[str, dict[int, dict[str, float]]]:
    """g. Splits past the training budget, read from a store: seconds per epoch and the share of the fit
    spent waiting for input, reading in-process vs in DataLoader workers (spawned, kept across epochs).
    Videos of 3 min, FCVID's mean: Choi 24 × 8,500 log-mel frames (78 MB), the video model 96 × 180
    embeddings (141 MB), past a 32-MB budget; ``quick``: 4 and 8 videos past 4 MB."""
    from instrec_pipeline.training.audio import AudioTrainConfig, train_audio
    from instrec_pipeline.training.video import VideoTrainConfig, train_video

    n_audio, n_frames = (4, 8) if quick else (24, 96)
    common = {"max_epochs": epochs, "patience": epochs, "stream_budget_bytes": (4 if quick else 32) << 20}
    figures: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        root = Path(tmp)
        audio = [stored_split(root, "audio", n, (CHOI.n_mels,), t) for n, t in ((n_audio, 8500), (8, 1400))]
        frames = [stored_split(root, "frames", n, (2048,), t) for n, t in ((n_frames, 180), (8, 60))]

        def choi(w: int) -> FitResult:
            cfg = AudioTrainConfig(model="choi", loader_workers=w, **common)
            return train_audio(*audio, 4, cfg, device)[1]

        def video(w: int) -> FitResult:
            cfg = VideoTrainConfig(lr_search=(), loader_workers=w, **common)
            return train_video(*frames, 4, cfg, device)[2]

        for title, train in (("Choi", choi), ("video model", video)):
            cells = figures[title] = {}
            for w in workers:
                fit = train(w)
                cells[w] = {"s_per_epoch": fit.seconds / fit.epochs_run,
                            "input_share": fit.input_seconds / fit.seconds}  # fmt: skip
            rows = [f"{w} workers {c['s_per_epoch']:.2f} s/epoch, waiting for input "
                    f"{100 * c['input_share']:.0f} %" for w, c in cells.items()]  # fmt: skip
            print(f"   {title}, past its budget ({epochs} epochs on {device.type}, {fit.precision}; "
                  f"the workers' start included): " + "; ".join(rows))  # fmt: skip
    return figures


# -- h. Inception forward: precision, layout, compiler, runtime ---------------------------------------
def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def inception_variants(
    embedder: FrameEmbedder, compiled: bool, openvino: bool = True
) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.memory_format | None]]:
    """name → (forward, the memory format of the normalised float NCHW batch it is fed, or None for
    OpenVINO, which takes the uint8 frames and normalises them in its graph) for ``embedder``'s model."""
    import copy

    cl, nchw = torch.channels_last, torch.contiguous_format
    model, device = embedder.model, embedder.device
    plain = copy.deepcopy(model).to(memory_format=nchw)

    def bf16(m: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return m(x)

        return run

    variants = {
        "torch float32, NCHW": (plain, nchw),
        "torch float32, channels-last": (model, cl),
        "torch bf16 autocast, NCHW": (bf16(plain), nchw),
        "torch bf16 autocast, channels-last": (bf16(model), cl),
    }
    if compiled:
        import torch._inductor.config as inductor

        inductor.freezing = True  # inference: fold batch norm into the convolutions, pre-pack weights
        variants["torch.compile float32, channels-last"] = (torch.compile(copy.deepcopy(model)), cl)
        variants["torch.compile bf16, channels-last"] = (bf16(torch.compile(copy.deepcopy(model))), cl)
    if openvino and device.type == "cpu":
        from instrec_pipeline.features.visual import _OpenVINOInception

        for precision in ("fp32", "bf16"):
            variants[f"OpenVINO {precision}"] = (_OpenVINOInception(model, embedder.weights, precision), None)
    return variants


def inception_table(
    embedder: FrameEmbedder,
    real: np.ndarray,
    batches: tuple[int, ...],
    compiled: bool,
    openvino: bool = True,
    label: str = "h",
    repeats: int = 2,
) -> dict[str, dict[int, float]]:
    """h. Frames/s per variant and batch size (median of ``repeats``) and each variant's worst cosine to
    torch float32 on ``real`` frames; returns the rates (``bench/gpu.py`` prints it as its section 2)."""

    def batch(frames: np.ndarray, fmt: torch.memory_format | None) -> torch.Tensor:
        return torch.from_numpy(frames) if fmt is None else torch_input(embedder, frames, fmt)

    with torch.inference_mode():
        ref = embedder.model(batch(real, torch.contiguous_format)).float().cpu().numpy()
    print(f"{label}. Inception v3 forward on {embedder.device} ({len(real)} real frames for the cosine; "
          f"first call, compilation included, not timed; {load()})")  # fmt: skip
    print("   " + "variant".ljust(38) + "".join(f"batch {b:<5}" for b in batches) + "  worst cosine")
    rates: dict[str, dict[int, float]] = {}
    for name, (forward, fmt) in inception_variants(embedder, compiled, openvino).items():
        start = time.perf_counter()
        with torch.inference_mode():
            out = forward(batch(real, fmt)).float().cpu().numpy()
        first = time.perf_counter() - start
        rates[name] = {}
        for b in batches:
            x = batch(frames_batch(embedder, b), fmt)
            rates[name][b] = statistics.median(forward_rate(forward, x, 2 * b) for _ in range(repeats))
        cells = "".join(f"{rates[name][b]:>8.1f} f/s " for b in batches)
        note = f"  (first call {first:.0f} s)" if first > 5 else ""
        print(f"   {name:<38}{cells}  {_cosine_min(ref, out):.5f}{note}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", help="embeddings: auto | fp32 | bf16")
    parser.add_argument("--runtime", default="auto", help="embeddings: auto | torch | openvino")
    parser.add_argument("--only", default=SECTIONS, help=f"sections to run, any of {SECTIONS} (default all)")
    parser.add_argument("--skip-compile", action="store_true", help="h: leave torch.compile out (~3 min)")
    args = parser.parse_args()
    only = set(args.only)
    out = Path(args.out).resolve()
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}; "
          f"{load()}")  # fmt: skip
    paths = [make_video(corpus / f"c{i:02d}_{args.seconds:g}s.mp4", args.seconds, i)
             for i in range(args.videos)]  # fmt: skip
    embedder = FrameEmbedder(
        "random", "auto", args.batch_size, precision=args.precision, runtime=args.runtime
    )
    embedder.embed(np.zeros((args.batch_size, PARAMS.crop, PARAMS.crop, 3), np.uint8))  # warm-up
    n_frames = args.videos * round(args.seconds)
    print(
        f"corpus: {args.videos} × {args.seconds:.0f} s mp4 (h264/aac, 640×360, 25 fps); embeddings on "
        f"{embedder.device}, {embedder.precision}, {embedder.runtime}"
    )

    stages: dict[str, float] = {}
    if only & set("acd"):
        floor, floor_cpu = ffmpeg_floor(paths)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            stages = extract(paths, Path(tmp), embedder)
            if "c" in only:
                pipeline_fps, bare_fps = embedding_rates(Path(tmp), embedder, n_frames, stages["embeddings"])
    if "a" in only:
        first = (stages["demux"], stages["demux_cpu"], floor, floor_cpu)
        wall_ratio, cpu_ratio = demux_ratios(paths, out, first)
        print(
            f"a. demux {stages['demux']:.2f} s vs ffmpeg floor {floor:.2f} s; ratio, median of 3 pairs: "
            f"{wall_ratio:.2f}  (target ≤ 1.15); CPU {stages['demux_cpu']:.2f} s vs {floor_cpu:.2f} s → "
            f"{cpu_ratio:.2f}  ({load()})"
        )

    if "b" in only:
        ours_rate, librosa_rate = logmel_vs_librosa(paths)
        print(
            f"b. log-mel {ours_rate:,.0f} s of audio/s (torchaudio) vs librosa {librosa_rate:,.0f} → "
            f"{ours_rate / librosa_rate:.1f}×  (target ≥ 5)"
        )

    if "c" in only:
        x32 = torch_input(embedder, frames_batch(embedder), torch.channels_last)
        fp32_fps = forward_rate(embedder.model, x32, n_frames)
        print(
            f"c. embeddings in the pipeline {pipeline_fps:.1f} frames/s vs bare model {bare_fps:.1f} "
            f"(medians of 3) → {pipeline_fps / bare_fps:.2f}  (target ≥ 0.9; batch {args.batch_size}, "
            f"{embedder.precision}, {embedder.runtime}); that model is {bare_fps / fp32_fps:.2f}× torch "
            f"float32's {fp32_fps:.1f} frames/s  ({load()})"
        )

    if "d" in only:
        baseline = opencv_baseline(paths, embedder.model.cpu())
        embedder.model.to(embedder.device)
        ours_total = stage_total(stages)
        print(
            f"d. end-to-end extraction {ours_total:.1f} s (demux {stages['demux']:.1f}, log-mel "
            f"{stages['log_mel']:.1f}, embeddings {stages['embeddings']:.1f}) vs OpenCV + batch-1 CNN "
            f"{baseline:.1f} s → {baseline / ours_total:.2f}× faster  (target ≥ 3; {load()})"
        )

    if "e" in only:
        many = [make_video(corpus / f"m{i:02d}.mp4", 6, i) for i in range(40)]
        per_video = []
        for subset in (many[:10], many):
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                per_video.append(stage_total(extract(subset, Path(tmp), embedder)) / len(subset))
        print(
            f"e. cost per video: {per_video[0]:.2f} s with 10 videos, {per_video[1]:.2f} s with 40 → ratio "
            f"{per_video[1] / per_video[0]:.2f}  (target ≤ 1.1)"
        )
        long = make_video(corpus / "long_600s.mp4", 600, 1)
        short = make_video(corpus / "short_30s.mp4", 30, 2)
        rss_short, rss_long = peak_rss(short), peak_rss(long)
        print(
            f"   peak RSS: {rss_short:.0f} MB for a 30-s video, {rss_long:.0f} MB for a 10-min video → ratio "
            f"{rss_long / rss_short:.2f}  (target ≤ 1.3)"
        )

    if "f" in only:
        threading_table(paths[:4], args.seconds, out)
    if "g" in only:
        training_precision()
        streaming_input(out, torch.device("cpu"))
    if "h" in only:
        real = demux(paths[0], replace(PARAMS, sample_rates=())).frames[: args.batch_size]
        torch_fp32 = FrameEmbedder("random", embedder.device.type, args.batch_size)  # same weights, plain
        inception_table(torch_fp32, real, (args.batch_size,), compiled=not args.skip_compile)
    print(f"(this process: max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
