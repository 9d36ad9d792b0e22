"""Scale benchmark: does the cost per video stay flat, and what would FCVID and YouTube-8M take?
Prints figures, asserts nothing (a benchmark, not a test).

    .venv/bin/python bench/scale.py [--quick] [--only store|extraction|training|projection] [--out bench/out]

1. Store overhead on its own: ``RaggedArray.append_stream`` + commits per video per modality beyond
   compressing and writing the video's own bytes (a plain Zarr array, same chunks and codec, written chunk
   by chunk), at 1,000 vs 100,000 appends (quick: 1,000 vs 10,000). Target ≤ 5 ms, flat.
2. Extraction cost per video through the real Dagster assets (manifest → raw_videos → demux → log_mel,
   frame_embeddings) on generated user datasets of distinct 1-s videos, at two sizes (quick: 50 vs 200),
   plus a few long videos for the per-second rates. Target: ratio ≤ 1.1.
3. Training peak RSS (Choi audio model, video model; one epoch each, a fresh process per run) on stores
   equivalent to 10 h vs 100 h of 240-s videos (quick: 1 h vs 5 h). Target: ratio ≤ 1.2, ≤ 3 GB.
4. A projection for FCVID and YouTube-8M from 1–3: wall time, disk, RAM on this machine, one GPU node,
   and 4 / 16 nodes under the Celery executor.

Figures go to ``<out>/scale.json`` too, so ``--only projection`` can reuse the last run's measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CLASSES = ("flute", "guitar", "trumpet")
SECTIONS = ("store", "extraction", "training", "projection")
EXTRACTION_ASSETS = ("manifest", "raw_videos", "demux", "log_mel", "frame_embeddings")
#: Rows per video in the store benchmark: two 2048-d embeddings (a 2-s video at 1 fps).
STORE_ROWS, STORE_DIM = 2, 2048
#: Training videos are 240 s long, like a typical FCVID / YouTube-8M video.
TRAIN_VIDEO_S = 240
#: One GPU node: 16 cores and one H100/H200. Its Inception v3 rate is an ASSUMPTION, not measured here.
NODE_CORES = 16
ASSUMED_GPU_FPS = 2000.0
#: dataset × split partitions: the share of each split (assign_splits' 70/15/15).
SPLIT_SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")  # Dagster's, at import


# -- helpers --------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], title: str) -> pd.DataFrame:
    """Print ``rows`` as a plain-text table under ``title``; return the frame."""
    frame = pd.DataFrame(rows)
    print(f"\n{title}")
    print(frame.to_string(index=False))
    return frame


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def hms(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# -- 1. store overhead ----------------------------------------------------------------------------
def embedding_pool(rows: int, seed: int = 0) -> np.ndarray:
    """Embedding-like rows: non-negative (post-ReLU), structured across time and dimension, a little noise
    — compressible about as much as real Inception features, unlike pure noise or zeros."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float32)[:, None]
    d = np.arange(STORE_DIM, dtype=np.float32)[None, :]
    base = np.abs(np.sin(0.013 * t * (1 + d % 7) + 0.1 * d)) * ((d % 5 + 1) / 5)
    return (base + rng.normal(0, 0.01, base.shape)).clip(0, None).astype(np.float32)


def _time_store(n: int, pool: np.ndarray, path: Path) -> tuple[float, float, int]:
    """Seconds for ``n`` videos through ``append_stream`` (commits every ``COMMIT_VIDEOS``, as the policy
    would, but timed apart), seconds in commits, and the store's chunk rows."""
    import zarr

    from instrec_pipeline.store.ragged import COMMIT_VIDEOS, RaggedArray

    group = zarr.open_group(str(path), mode="w")
    arr = RaggedArray.open(group, "embeddings", (STORE_DIM,), "float32", {"bench": "scale"})
    arr.commit_videos, arr.commit_seconds = 1 << 62, float("inf")  # commits are timed below
    commit_s = 0.0
    start = time.perf_counter()
    for i in range(n):
        j = (STORE_ROWS * i) % len(pool)
        arr.append_stream(f"v{i:010d}", [pool[j : j + STORE_ROWS]])
        if (i + 1) % COMMIT_VIDEOS == 0 or i == n - 1:
            c = time.perf_counter()
            arr.commit()
            commit_s += time.perf_counter() - c
    total = time.perf_counter() - start
    if len(arr) != n or arr.n_rows != STORE_ROWS * n:
        raise RuntimeError(f"store holds {len(arr)} videos / {arr.n_rows} rows, expected {n}")
    return total, commit_s, arr.group["data"].chunks[0]


def _time_baseline(n: int, pool: np.ndarray, path: Path, chunk: int) -> float:
    """The same bytes into one plain Zarr array with the same chunks and codec, whole chunks in order."""
    import zarr

    from instrec_pipeline.store.ragged import _compressors  # the store's own codec, not a look-alike

    rows = STORE_ROWS * n
    padded = -(-rows // chunk) * chunk
    group = zarr.open_group(str(path), mode="w")
    start = time.perf_counter()
    data = group.create_array("data", shape=(padded, STORE_DIM), chunks=(chunk, STORE_DIM), dtype="float32",
                              compressors=_compressors("float32"))  # fmt: skip
    for s in range(0, padded, chunk):
        block = pool[s % len(pool) : s % len(pool) + chunk]
        if s + chunk > rows:  # the store pads its last chunk with the fill value (0)
            block = block.copy()
            block[rows - s :] = 0
        data[s : s + chunk] = block
    return time.perf_counter() - start


def store_overhead(sizes: Sequence[int], repeats: int, work: Path) -> dict[str, Any]:
    """Figure 1. Why a baseline: compressing and writing the bytes is the floor any store pays; what the
    ragged store adds on top (index, offsets, tails, commit records, resizes) must stay small and flat."""
    pool = embedding_pool(256 * 64)  # a multiple of the chunk rows, so store and baseline see equal bytes
    rows: list[dict[str, Any]] = []
    for n in sizes:
        best: dict[str, float] = {}
        # The minimum of a few runs (the machine is shared); small sizes get more runs, up to 10, so each
        # size is timed over a similar volume.
        for r in range(min(10, max(repeats, repeats * max(sizes) // n))):
            d = work / f"store_{n}_{r}"
            t_store, t_commit, chunk = _time_store(n, pool, d / "ragged.zarr")
            t_base = _time_baseline(n, pool, d / "plain.zarr", chunk)
            shutil.rmtree(d, ignore_errors=True)
            for k, v in (("store", t_store), ("commit", t_commit), ("base", t_base)):
                best[k] = min(best.get(k, float("inf")), v)
        mb = n * STORE_ROWS * STORE_DIM * 4 / 1e6
        rows.append({
            "videos": n, "MB": round(mb), "store_s": round(best["store"], 3), "of_which_commits_s":
            round(best["commit"], 3), "plain_zarr_s": round(best["base"], 3),
            "overhead_ms_per_video": round((best["store"] - best["base"]) / n * 1e3, 4),
            "store_MB_per_s": round(mb / best["store"], 1), "plain_MB_per_s": round(mb / best["base"], 1),
        })  # fmt: skip
    title = f"1. Store overhead per video per modality ({STORE_ROWS}×{STORE_DIM} float32 a video, min of"
    frame = table(rows, f"{title} {repeats}+ runs)")
    over = frame["overhead_ms_per_video"].tolist()
    print(f"   overhead {over[0]:.3f} → {over[-1]:.3f} ms per video: ratio {ratio(over[-1], over[0]):.2f} "
          f"(target ≤ 5 ms, flat)")  # fmt: skip
    return {"rows": rows, "overhead_ms": over[-1], "plain_MB_per_s": rows[-1]["plain_MB_per_s"]}


# -- 2. extraction through the Dagster assets -----------------------------------------------------
def make_segments(out: Path, count: int, seconds: int, size: str, rate: int, sample_rate: int) -> list[Path]:
    """``count`` distinct ``seconds``-long h264/aac mp4 files from ONE ffmpeg run (the segment muxer cuts
    one long moving test pattern, with a pitch that changes over time, at forced keyframes)."""
    out.mkdir(parents=True, exist_ok=True)
    have = sorted(out.glob("s*.mp4"))
    if len(have) >= count:
        return have[:count]
    total = count * seconds + 2
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={total}",
        "-f", "lavfi", "-i", f"aevalsrc=sin(2*PI*(200+50*mod(t\\,17))*t):s={sample_rate}:d={total}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-force_key_frames", "expr:gte(t,n_forced*1)", "-c:a", "aac", "-b:a", "64k",
        "-f", "segment", "-segment_time", str(seconds), "-reset_timestamps", "1", str(out / "s%06d.mp4"),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    have = sorted(out.glob("s*.mp4"))
    if len(have) < count:
        raise RuntimeError(f"ffmpeg made {len(have)} segments in {out}, expected {count}")
    return have[:count]


def dataset_plan(args: argparse.Namespace, work: Path) -> dict[str, tuple[Path, int]]:
    """Extraction datasets by name: (manifest path, videos). Known before anything is generated, so the
    datasets file can be written before the Dagster definitions are imported (partitions are fixed then)."""
    plan = {f"scale{n}": (work / "short" / f"scale{n}.csv", n) for n in args.videos}
    plan["scalelong"] = (work / "long" / "scalelong.csv", args.long_videos)
    return plan


def write_datasets_yaml(path: Path, plan: dict[str, tuple[Path, int]]) -> None:
    """Classes and ``multilabel`` given: the registry need not read a manifest that is not there yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["datasets:"]
    for name, (manifest, _) in plan.items():
        lines.append(
            f"  {name}: {{manifest: {manifest}, classes: [{', '.join(CLASSES)}], multilabel: false}}"
        )
    path.write_text("\n".join(lines) + "\n")


def write_manifest(path: Path, videos: list[Path]) -> None:
    pd.DataFrame({
        "video_id": [p.stem for p in videos], "source": [p.name for p in videos],
        "label": [CLASSES[i % len(CLASSES)] for i in range(len(videos))], "split": "train",
    }).to_csv(path, index=False)  # fmt: skip


def materialise(name: str, root: Path, device: str, weights: str) -> dict[str, Any]:
    """The five extraction assets of ``<name>|train`` in one run; seconds per step from the run's events."""
    from dagster import AssetSelection, DagsterEventType, DagsterInstance, materialize

    from instrec_pipeline.definitions import defs
    from instrec_pipeline.defs.resources import ComputeResource, ExtractionResource, StoreResource

    instance = DagsterInstance.ephemeral()
    loaded = defs()
    resources = {
        **loaded.resources, "store": StoreResource(root=str(root)),
        "compute": ComputeResource(device=device, workers=2),
        "extraction": ExtractionResource(inception_weights=weights),
    }  # fmt: skip
    start = time.perf_counter()
    result = materialize(list(loaded.assets), selection=AssetSelection.assets(*EXTRACTION_ASSETS),
                         partition_key=f"{name}|train", resources=resources, instance=instance,
                         run_config=QUIET)  # fmt: skip
    wall = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(f"materialising {name}|train failed")
    begin: dict[str, float] = {}
    steps: dict[str, float] = {}
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            begin[event.step_key] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            steps[event.step_key] = record.timestamp - begin[event.step_key]
    meta = {a: result.asset_materializations_for_node(a)[0].metadata for a in ("demux", "frame_embeddings")}
    failed = int(meta["demux"]["failed"].value)
    if failed:
        raise RuntimeError(f"{name}: {failed} videos failed to demux")
    return {"steps": {a: steps[a] for a in EXTRACTION_ASSETS}, "wall": wall,
            "frames": int(meta["frame_embeddings"]["frames"].value)}  # fmt: skip


def fit_stage_costs(
    short: dict[int, dict[str, Any]], long: dict[str, Any], long_n: int, long_s: float
) -> dict[str, dict[str, float]]:
    """Per stage: fixed seconds per partition, seconds per video and per second of video.

    A line through the short-video sizes gives the fixed (per-partition) and per-video costs; the long
    videos then give the per-second cost beyond a 1-s video's. Noise can push a term below zero: clamped.
    """
    sizes = sorted(short)
    model: dict[str, dict[str, float]] = {}
    for stage in EXTRACTION_ASSETS:
        y = [short[n]["steps"][stage] for n in sizes]
        per_video, fixed = np.polyfit(sizes, y, 1)
        per_video, fixed = max(per_video, 0.0), max(fixed, 0.0)
        per_second = (long["steps"][stage] - fixed - long_n * per_video) / (long_n * (long_s - 1))
        per_second = max(per_second, 0.0)
        model[stage] = {
            "fixed_s": fixed,
            "per_video_s": max(per_video - per_second, 0.0),
            "per_s": per_second,
        }
    return model


def extraction(args: argparse.Namespace, work: Path, plan: dict[str, tuple[Path, int]]) -> dict[str, Any]:
    """Figure 2. Why through Dagster: the cost per video a user sees includes the run, the steps, the
    store's commits and every stage's per-video work, not only the kernels bench/extraction.py times."""
    t0 = time.perf_counter()
    short = make_segments(work / "short", max(args.videos), 1, "320x240", 10, 16000)
    long = make_segments(work / "long", args.long_videos, args.long_seconds, "640x360", 25, 44100)
    for name, (manifest, n) in plan.items():
        write_manifest(manifest, long if name == "scalelong" else short[:n])
    print(f"\n   generated {len(short)} × 1-s (320×240 @ 10 fps) and {len(long)} × {args.long_seconds}-s "
          f"(640×360 @ 25 fps) h264/aac mp4 in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    runs: dict[str, dict[str, Any]] = {}
    for name in plan:
        runs[name] = materialise(name, work / "stores" / name, args.device, args.weights)
        shutil.rmtree(work / "stores" / name, ignore_errors=True)
        print(f"   {name}|train: {runs[name]['wall']:.0f} s", flush=True)
    by_size = {n: runs[f"scale{n}"] for n in args.videos}
    lo, hi = min(args.videos), max(args.videos)
    rows = []
    for stage in [*EXTRACTION_ASSETS, "total (steps)", "run wall (materialize)"]:

        def per_video(n: int, stage: str = stage) -> float:
            r = by_size[n]
            s = sum(r["steps"].values()) if stage == "total (steps)" else r["steps"].get(stage, r["wall"])
            return s / n * 1e3

        row = {"asset": stage, **{f"ms/video @{n}": round(per_video(n), 1) for n in args.videos}}
        row[f"ratio {hi}/{lo}"] = round(ratio(per_video(hi), per_video(lo)), 2)
        rows.append(row)
    table(rows, f"2. Extraction cost per video through the Dagster assets (1-s videos, compute.workers=2, "
                f"device {args.device}, Inception weights {args.weights}; target ratio ≤ 1.1)")  # fmt: skip
    model = fit_stage_costs(by_size, runs["scalelong"], args.long_videos, args.long_seconds)
    lr = runs["scalelong"]
    emb_fps = 1 / model["frame_embeddings"]["per_s"] if model["frame_embeddings"]["per_s"] else float("nan")
    fitted = [
        {
            "asset": s,
            "fixed s/partition": round(m["fixed_s"], 2),
            "ms/video": round(m["per_video_s"] * 1e3, 1),
            "ms per s of video": round(m["per_s"] * 1e3, 2),
            "long run s": round(lr["steps"][s], 2),
        }
        for s, m in model.items()
    ]
    table(fitted, f"   fitted cost model (sizes {lo}, {hi}; long: {args.long_videos} × {args.long_seconds} s "
                  f"took {lr['wall']:.0f} s, {lr['frames']} frames)")  # fmt: skip
    demux_core = model["demux"]["per_s"] * os.cpu_count()
    print(f"   demux {demux_core:.3f} core-s per s of video ({os.cpu_count()} cores); embeddings "
          f"{emb_fps:.1f} frames/s on CPU (marginal)")  # fmt: skip
    return {"runs": runs, "model": model, "cores": os.cpu_count(), "embedding_fps_cpu": emb_fps,
            "videos": list(args.videos), "long": [args.long_videos, args.long_seconds]}  # fmt: skip


# -- 3. training peak RSS -------------------------------------------------------------------------
def _logmel_pattern(frames: int, n_mels: int, cls: int, rng: np.random.Generator) -> np.ndarray:
    """A log-mel-like (frames, n_mels) in dB, −80..0: a falling spectral envelope, class-specific harmonics
    that move over time, and noise."""
    t = np.arange(frames, dtype=np.float32)[:, None]
    m = np.arange(n_mels, dtype=np.float32)[None, :]
    envelope = -25 - 35 * m / n_mels
    harmonics = 15 * np.sin(2 * np.pi * t / (29 + 7 * cls + m % 11)) * np.cos(m * (cls + 1) / 9)
    return np.clip(envelope + harmonics + rng.normal(0, 4, (frames, n_mels)), -80, 0).astype(np.float32)


def write_training_store(root: Path, dataset: str, splits: dict[str, int]) -> float:
    """Train and val splits of 240-s videos, written through the store API as extraction writes them:
    ``logmel_choi`` and ``embeddings`` in the partition's Zarr group, and the manifest table. Returns GB."""
    from instrec_pipeline.features.logmel import CHOI
    from instrec_pipeline.store import EMBEDDINGS, FeatureStore, RaggedArray, logmel_modality_name
    from instrec_pipeline.store.layout import Layout, write_csv_atomic

    rng = np.random.default_rng(0)
    frames = TRAIN_VIDEO_S * CHOI.sample_rate // CHOI.hop
    mels = [_logmel_pattern(frames, CHOI.n_mels, c, rng) for c in range(len(CLASSES))]
    embs = [embedding_pool(TRAIN_VIDEO_S, seed=c) for c in range(len(CLASSES))]
    layout = Layout(root)
    for split, n in splits.items():
        group = FeatureStore(root).group(dataset, split)
        ids = [f"{split}{i:06d}" for i in range(n)]
        labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
        mel_params = {**CHOI.as_dict(), "source": "synthetic", "library": "bench/scale.py"}
        with RaggedArray.open(group, logmel_modality_name(CHOI.name), (CHOI.n_mels,), "float32",
                              mel_params) as mel, RaggedArray.open(
            group, EMBEDDINGS, (STORE_DIM,), "float32", {"source": "synthetic"}
        ) as emb:  # fmt: skip
            for i, vid in enumerate(ids):
                c = i % len(CLASSES)
                shift = int(rng.integers(frames))
                mel.append_stream(vid, [np.clip(np.roll(mels[c], shift, 0) + rng.normal(0, 2), -80, 0)])
                emb.append_stream(vid, [np.roll(embs[c], shift % TRAIN_VIDEO_S, 0) * rng.uniform(0.8, 1.2)])
        table_ = pd.DataFrame({"video_id": ids, "source": [f"{v}.mp4" for v in ids], "label": labels,
                               "split": split})  # fmt: skip
        write_csv_atomic(table_, layout.table(dataset, split, "manifest"))
    size = sum(f.stat().st_size for f in (root / "features" / dataset).rglob("*") if f.is_file())
    return size / 1e9


class PeakSampler(threading.Thread):
    """Peak PSS of this process and its children (DataLoader workers), sampled: VmHWM sees only this one."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak = interval, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        me = psutil.Process()
        while not self._stop_event.wait(self.interval):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, OSError):
                    total += p.memory_full_info().pss
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])


def train_child(root: str, dataset: str, model: str) -> None:
    """In a fresh process: train one model one epoch through ``training.runs``; print JSON figures.

    VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork + exec into ru_maxrss.
    """
    import torch

    from instrec_pipeline.store.layout import Layout
    from instrec_pipeline.training.audio import AudioTrainConfig
    from instrec_pipeline.training.runs import train_and_save_audio, train_and_save_video
    from instrec_pipeline.training.video import VideoTrainConfig

    floor = _status_kb("VmRSS")
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    layout, device = Layout(Path(root)), torch.device("cpu")
    if model == "choi":
        cfg = AudioTrainConfig(model="choi", max_epochs=1)
        meta = train_and_save_audio(layout, dataset, list(CLASSES), cfg, device)
    else:
        cfg = VideoTrainConfig(max_epochs=1)
        meta = train_and_save_video(layout, dataset, list(CLASSES), cfg, device)
    wall = time.perf_counter() - start
    tree = sampler.stop()
    print(json.dumps({
        "import_rss_mb": floor / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024, "tree_pss_mb": tree / 2**20,
        "seconds": wall, "fit_seconds": meta["seconds"], "epochs": meta["epochs_run"],
        "budget_mb": cfg.stream_budget_bytes / 2**20, "workers": cfg.workers(device),
    }))  # fmt: skip


def training(hours: Sequence[float], val_videos: int, work: Path) -> dict[str, Any]:
    """Figure 3. Why a process per run: peak RSS must be that run's alone. Videos are written directly
    with the store API (extracting 100 h here would take days); training reads them as it reads real ones."""
    rows: list[dict[str, Any]] = []
    for h in hours:
        n = max(1, round(h * 3600 / TRAIN_VIDEO_S))
        dataset = f"train{h:g}h".replace(".", "_")
        root = work / "train_store"
        t0 = time.perf_counter()
        gb = write_training_store(root, dataset, {"train": n, "val": val_videos})
        print(f"\n   {dataset}: {n} train + {val_videos} val videos × {TRAIN_VIDEO_S} s written "
              f"({gb:.2f} GB on disk) in {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
        for model in ("choi", "video"):
            out = subprocess.run([sys.executable, __file__, "--train-child", str(root), dataset, model],
                                 capture_output=True, text=True)  # fmt: skip
            if out.returncode:
                raise RuntimeError(f"training {model} on {dataset} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"hours": h, "videos": n, "model": model, "import_MB": round(r["import_rss_mb"]),
                         "peak_RSS_MB": round(r["peak_rss_mb"]), "peak_tree_PSS_MB": round(r["tree_pss_mb"]),
                         "seconds": round(r["seconds"], 1), "epochs": r["epochs"]})  # fmt: skip
            print(f"   {model}: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.0f} s", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    title = "3. Training peak memory, one epoch (max_epochs=1), fresh process per run, CPU\n   (peak_RSS: "
    frame = table(rows, title + "main process VmHWM; tree_PSS: with DataLoader workers, sampled)")
    lo, hi = min(hours), max(hours)
    summary = {}
    for model in ("choi", "video"):
        a = frame[(frame["model"] == model) & (frame["hours"] == lo)].iloc[0]
        b = frame[(frame["model"] == model) & (frame["hours"] == hi)].iloc[0]
        peak = max(b["peak_RSS_MB"], b["peak_tree_PSS_MB"])
        summary[model] = {"ratio": ratio(b["peak_RSS_MB"], a["peak_RSS_MB"]), "peak_mb": float(peak),
                          "seconds_per_train_hour": b["seconds"] / hi}  # fmt: skip
        print(f"   {model}: peak RSS {a['peak_RSS_MB']} → {b['peak_RSS_MB']} MB ({lo:g} h → {hi:g} h), ratio "
              f"{summary[model]['ratio']:.2f} (target ≤ 1.2); largest {peak:.0f} MB (target ≤ 3 GB + model); "
              f"{summary[model]['seconds_per_train_hour']:.0f} s per train hour per epoch")  # fmt: skip
    return {"rows": rows, "summary": summary, "hours": list(hours)}


# -- 4. projection ----------------------------------------------------------------------------------
Setting = dict[str, Any]


def partition_seconds(model: dict, n: float, s: float, setting: Setting, writer_floor: float) -> float:
    """One partition's extraction (``n`` videos, ``s`` seconds of video) on one node of ``setting``.

    Scaled by cores: ffmpeg work (raw_videos, demux per video and per second) and, conservatively, the
    log-mel STFT (it would run on the GPU). Not scaled: per-partition fixed costs and the per-video store
    work of the log-mel and embedding steps (one thread each). Demux never beats its serial store writer.
    """
    total = 0.0
    for stage, m in model.items():
        fixed, per_video, per_s = m["fixed_s"], n * m["per_video_s"], s * m["per_s"]
        if stage in ("raw_videos", "demux"):
            work = (per_video + per_s) / setting["ffmpeg_speedup"]
            total += fixed + (max(work, writer_floor) if stage == "demux" else work)
        elif stage == "log_mel":
            total += fixed + per_video + per_s / setting["cpu_speedup"]
        elif stage == "frame_embeddings":
            total += fixed + per_video + s * setting["embed_s_per_frame"]
        else:
            total += fixed + per_video + per_s
    return total


def spread(parts: list[float], nodes: int) -> float:
    """Wall time of whole partitions spread over ``nodes`` (longest first, each to the least busy node):
    a partition's steps run on one node, so with more nodes than partitions the largest sets the pace."""
    busy = [0.0] * max(1, nodes)
    for p in sorted(parts, reverse=True):
        busy[busy.index(min(busy))] += p
    return max(busy)


def projection(results: dict[str, Any]) -> dict[str, Any]:
    """Figure 4. Why model it: neither dataset can be extracted here; the measured per-partition,
    per-video and per-second costs (2), the store's writer rate (1) and the training peak (3) say what
    they would take, with the GPU's rate an explicit assumption."""
    from instrec_pipeline.datasets.registry import datasets
    from instrec_pipeline.defs.resources import ExtractionResource
    from instrec_pipeline.features.footprint import footprint
    from instrec_pipeline.features.logmel import MEL_INPUTS

    ext = results["extraction"]
    model, here = ext["model"], ext["cores"]
    emb_cpu = model["frame_embeddings"]["per_s"]  # seconds per frame at 1 fps
    writer_mb_s = results["store"]["plain_MB_per_s"]  # compress + write; the store's own cost is store_ms
    store_ms = results["store"]["overhead_ms"]
    extraction_cfg = ExtractionResource()
    rates = tuple(sorted({m.sample_rate for m in MEL_INPUTS.values()}))
    codec = extraction_cfg.frame_codec()
    per_hour = footprint(3600, extraction_cfg.fps, extraction_cfg.crop, codec, rates, MEL_INPUTS.values())
    audio_bytes_per_s = sum(rates) * 4  # float32 mono per rate, written by demux's single writer
    train = results.get("training", {}).get("summary", {})
    ram_mb = max((v["peak_mb"] for v in train.values()), default=float("nan"))
    ram_at = max(results.get("training", {}).get("hours", [0]))
    speedup = NODE_CORES / here
    gpu = 1 / ASSUMED_GPU_FPS

    def node(nodes: int, ffmpeg: float, cpu: float, embed: float) -> Setting:
        return {"nodes": nodes, "ffmpeg_speedup": ffmpeg, "cpu_speedup": cpu, "embed_s_per_frame": embed}

    settings: list[tuple[str, Setting]] = [
        (f"this machine ({here} cores, CPU)", node(1, 1.0, 1.0, emb_cpu)),
        (f"1 GPU node ({NODE_CORES} cores + 1 GPU)", node(1, speedup, speedup, gpu)),
        *((f"{n} GPU nodes, Celery", node(n, speedup, speedup, gpu)) for n in (4, 16)),
        *((f"{n} GPU nodes, Celery + Dask demux", node(n, speedup * n, speedup, gpu)) for n in (4, 16)),
    ]
    rows = []
    train_hours: dict[str, float] = {}
    for name in ("fcvid", "yt8m"):
        durations = datasets()[name].durations()
        n, seconds = len(durations), float(durations.sum())
        train_hours[name] = seconds / 3600
        disk = sum(per_hour.values()) * seconds / 3600
        for label, setting in settings:
            parts = []
            for share in SPLIT_SHARES.values():
                pn, ps = n * share, seconds * share
                floor = pn * 3 * store_ms / 1e3 + ps * audio_bytes_per_s / 1e6 / writer_mb_s
                parts.append(partition_seconds(model, pn, ps, setting, floor))
            wall = spread(parts, setting["nodes"])
            rows.append({"dataset": f"{name} ({n:,} videos, {seconds / 3600:,.0f} h)", "setting": label,
                         "wall": hms(wall), "disk_GB": f"{disk / 1e9:,.0f}",
                         "RAM_GB (training peak)": f"{ram_mb / 1024:.1f}"})  # fmt: skip
    title = (f"4. Projection (extraction wall time, store disk, training RAM).\n   Embedding rate: CPU "
             f"{1 / emb_cpu:.1f} frames/s measured; GPU {ASSUMED_GPU_FPS:,.0f} frames/s ASSUMED (Inception "
             f"v3, bf16, H100), not measured. RAM: training peak measured at {ram_at:g} h.")  # fmt: skip
    frame = table(rows, title)
    serial = f"audio at {writer_mb_s:.0f} MB/s and {store_ms:.3f} ms a video (JPEG is done by the workers)"
    disk_parts = ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in per_hour.items())
    print(f"""
   Assumptions: costs per partition / video / second of video from figure 2 (1-s and long test videos);
   downloads not included (raw_videos here copies local files); CPU stages scale by cores
   ({here} → {NODE_CORES}, ×{speedup:g}); the log-mel STFT is scaled like a CPU stage (conservative:
   it would run on the GPU); partitions are dataset × split (70/15/15), so under Celery at most 3 nodes
   are busy and the train partition sets the wall time: 4 and 16 nodes give the same.
   With Dask, demux's ffmpeg work spreads over every node's cores, down to the serial part, each
   partition's single store writer: {serial} per modality.
   Log-mel and embeddings stay one step on one node (one GPU) per partition.
   RAM is training's peak (bounded by stream_budget_bytes, not by the dataset's size).
   Disk per hour of video (footprint.py): {disk_parts}.
   Videos: those with a known duration in the dataset's durations list.""")
    choi = train.get("choi", {}).get("seconds_per_train_hour")
    for name, hours in train_hours.items() if choi else ():
        epoch = hms(choi * hours * SPLIT_SHARES["train"])
        print(f"   Choi training on this machine's CPU: ~{epoch} per epoch for {name}'s train split")
    print("\n   Markdown (for the README):\n")
    print(markdown(frame))
    return {"rows": rows}


# -- main --------------------------------------------------------------------------------------------
def timed_section(name: str, fn: Callable[[], dict[str, Any]], results: dict[str, Any]) -> None:
    start = time.perf_counter()
    results[name] = fn()
    print(f"   ({name}: {time.perf_counter() - start:.0f} s)", flush=True)


def parse(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this figure (repeatable)")
    parser.add_argument("--out", default="bench/out", help="where scale.json goes")
    parser.add_argument("--work", help="scratch folder (default: a fresh temporary one, removed at the end)")
    parser.add_argument("--appends", type=int, nargs="+", help="figure 1 sizes (default 1000 100000)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="figure 1: runs per size (the minimum is kept)"
    )
    parser.add_argument("--videos", type=int, nargs="+", help="figure 2 sizes (default 1000 5000)")
    parser.add_argument(
        "--long-videos", type=int, help="figure 2: long videos for per-second rates (default 8)"
    )
    parser.add_argument("--long-seconds", type=int, help="figure 2: their length (default 180)")
    parser.add_argument(
        "--device", default="cpu", help="figure 2: compute.device (the projection assumes cpu)"
    )
    parser.add_argument("--weights", default="random", help="figure 2: Inception weights (no download here)")
    parser.add_argument("--hours", type=float, nargs="+", help="figure 3 sizes (default 10 100)")
    parser.add_argument("--val-videos", type=int, default=20, help="figure 3: videos in the val split")
    parser.add_argument("--train-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Long videos: enough seconds that their per-second cost stands well above the noise of the fit.
    quick = {
        "appends": [1000, 10000],
        "videos": [50, 200],
        "long_videos": 4,
        "long_seconds": 60,
        "hours": [1, 5],
    }
    full = {"appends": [1000, 100000], "videos": [1000, 5000], "long_videos": 8, "long_seconds": 180,
            "hours": [10, 100]}  # fmt: skip
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse()
    if args.train_child:
        train_child(*args.train_child)
        return
    sections = args.only or list(SECTIONS)
    work = Path(args.work or tempfile.mkdtemp(prefix="instrec-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Settings and partitions are read when the definitions are imported: declare the datasets first.
    plan = dataset_plan(args, work)
    write_datasets_yaml(work / "datasets.yaml", plan)
    os.environ["INSTREC_DATASETS"] = str(work / "datasets.yaml")
    os.environ["INSTREC_HOME"] = str(work / "home")
    saved = out / "scale.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() and args.only else {}
    print(f"bench/scale.py {'--quick ' if args.quick else ''}on {os.cpu_count()} cores; scratch {work}")
    start = time.perf_counter()
    try:
        if "store" in sections:
            timed_section("store", lambda: store_overhead(args.appends, args.repeats, work), results)
        if "extraction" in sections:
            timed_section("extraction", lambda: extraction(args, work, plan), results)
        if "training" in sections:
            timed_section("training", lambda: training(args.hours, args.val_videos, work), results)
        saved.write_text(json.dumps(results, indent=1, default=float))
        if "projection" in sections:
            missing = [s for s in ("store", "extraction") if s not in results]
            if missing:
                print(
                    f"\n4. Projection skipped: no figures for {', '.join(missing)} (run them, or all, first)"
                )
            else:
                timed_section("projection", lambda: projection(results), results)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nDone in {time.perf_counter() - start:.0f} s; figures in {saved}")


if __name__ == "__main__":
    main()
