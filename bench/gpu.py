"""GPU benchmark (issue #12): the figures a lent GPU machine can give in a few minutes, in one run.

    bash bench/gpu.sh [--quick]                  # installs what is missing, then runs this
    .venv/bin/python bench/gpu.py --projection bench/out/gpu.json   # the projection, from a GPU run's figures

1. decode: source frames decoded per second by the pipeline's CPU ffmpeg demux (one process per core,
   ``demux_plan``) vs torchcodec on the GPU (NVDEC) and FFmpeg's own NVDEC through PyAV;
2. Inception v3 frames/s at batch 32–256: float32, bf16 autocast, channels-last, torch.compile (section h
   of ``bench/extraction.py``, reused);
3. end-to-end: the pipeline's extraction (demux → store → log-mel → embeddings) per video, CUDA bf16, and
   how fast the embedding stage's reader threads (``frame_readers``) decode stored frames for the GPU;
4. training input: seconds per epoch and the share spent waiting for input when a split exceeds the
   training budget, read in-process vs by DataLoader workers (what ``parallel.loader_workers`` sets
   beside a GPU; section g of ``bench/extraction.py``, reused);
5. the FCVID / YouTube-8M projection of ``bench/scale.py`` with the measured Inception rate in place of
   its assumed one (it needs the scale run's ``scale.json`` and Dagster: where they are missing, the
   figures go to ``gpu.json`` and ``--projection`` computes it on a machine that has them).

Without a GPU every GPU part prints why it was skipped; ``--quick`` (CI, ``make bench-gpu``) shrinks the
corpus and the batches so the whole script proves it runs in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import extraction  # noqa: E402  (bench/extraction.py: corpus, forward rates, the Inception table)

from instrec_pipeline.features.partition import batch_blocks, frame_batches  # noqa: E402
from instrec_pipeline.features.visual import FrameEmbedder  # noqa: E402
from instrec_pipeline.media.demux import demux, iter_frames  # noqa: E402
from instrec_pipeline.parallel import demux_plan, frame_readers, usable_cores  # noqa: E402
from instrec_pipeline.store import FeatureStore, Frames  # noqa: E402

SOURCE_FPS = 25  # extraction.make_video's frame rate


def skipped(what: str, why: str) -> None:
    print(f"   {what}: SKIPPED — {why}")


def parallel_rate(paths: list[Path], one: Callable[[Path], int], workers: int) -> float:
    """Frames/s of ``one(path) -> frames`` over ``paths``, ``workers`` at once (the first is a warm-up)."""
    one(paths[0])
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        frames = sum(pool.map(one, paths))
    return frames / (time.perf_counter() - start)


def _source_frames(path: Path) -> int:
    """Every frame of a corpus video: what a decoder has to decode to sample any of them."""
    return round(_duration(path) * SOURCE_FPS)


def _duration(path: Path) -> float:
    from instrec_pipeline.media.probe import probe

    return probe(path).duration


def cpu_ffmpeg(path: Path) -> int:
    """The pipeline's demux frames (1 fps, scaled, cropped), ffmpeg decoding every source frame."""
    for _ in iter_frames(path, extraction.PARAMS):
        pass
    return _source_frames(path)


def torchcodec_decoder(device: str) -> Callable[[Path], int] | str:
    """torchcodec sampling the pipeline's instants on ``device``, or why it cannot run here."""
    if importlib.util.find_spec("torchcodec") is None:
        return "torchcodec not installed"
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as exc:  # its FFmpeg libraries missing or of another major version
        return f"torchcodec does not load: {str(exc).splitlines()[0][:160]}"

    def one(path: Path) -> int:
        decoder = VideoDecoder(str(path), device=device, seek_mode="approximate")
        n = int(decoder.metadata.duration_seconds or 0)
        decoder.get_frames_played_at([i + 0.5 for i in range(n)])
        return _source_frames(path)

    return one


def pyav_nvdec(path: Path) -> int:
    """Every frame decoded by FFmpeg's NVDEC (cuvid) through PyAV's bundled FFmpeg, copied to the host."""
    import av
    from av.codec.hwaccel import HWAccel

    with av.open(str(path), hwaccel=HWAccel(device_type="cuda", allow_software_fallback=False)) as container:
        return sum(1 for _ in container.decode(video=0))


def decode_section(paths: list[Path], cuda: bool) -> dict[str, float]:
    """1. Source frames decoded per second, CPU ffmpeg (the pipeline's demux) vs NVDEC."""
    rates: dict[str, float] = {}
    workers = demux_plan().workers
    print(f"1. decode: source frames decoded/s over {len(paths)} videos ({extraction.load()})")
    if shutil.which("ffmpeg"):
        rates["cpu_ffmpeg"] = parallel_rate(paths, cpu_ffmpeg, workers)
        print(f"   CPU ffmpeg, the pipeline's demux ({workers} processes × 1 thread; frames resized and "
              f"audio resampled too): {rates['cpu_ffmpeg']:,.0f} frames/s")  # fmt: skip
    else:
        skipped("CPU ffmpeg", "no ffmpeg binary on this machine")
    for device in ("cpu", "cuda"):
        name = f"torchcodec {device}{' (NVDEC)' if device == 'cuda' else ''}, frames at the instants"
        one = torchcodec_decoder(device)
        if device == "cuda" and not cuda:
            skipped(name, "no CUDA device")
        elif isinstance(one, str):
            skipped(name, one)
        else:
            try:
                rates[f"torchcodec_{device}"] = parallel_rate(paths, one, workers if device == "cpu" else 4)
                print(f"   {name}: {rates[f'torchcodec_{device}']:,.0f} frames/s")
            except Exception as exc:  # e.g. PyPI's torchcodec is its CPU build: no CUDA decoder in it
                skipped(name, str(exc).splitlines()[0][:200])
    if not cuda:
        skipped("FFmpeg NVDEC via PyAV", "no CUDA device")
    else:
        try:
            rates["pyav_nvdec"] = parallel_rate(paths, pyav_nvdec, 4)
            print(f"   FFmpeg NVDEC via PyAV (4 streams, frames copied to the host): "
                  f"{rates['pyav_nvdec']:,.0f} frames/s")  # fmt: skip
        except Exception as exc:
            skipped("FFmpeg NVDEC via PyAV", str(exc).splitlines()[0][:200])
    return rates


def reading_rates(group: zarr.Group, batch_size: int) -> dict[int, float]:
    """Stored frames read and decoded per second by the embedding stage's readers (1, 2, 4 threads, up to
    the cores): what can feed the GPU, beside its Inception rate."""
    frames = Frames.read(group)
    blocks = batch_blocks(frames.array, frames.array.video_ids, batch_size)
    rates = {}
    for readers in sorted({min(n, usable_cores()) for n in (1, 2, 4)}):
        start = time.perf_counter()
        n = sum(len(batch) for batch in frame_batches(frames, blocks, readers))
        rates[readers] = n / (time.perf_counter() - start)
    return rates


def end_to_end(paths: list[Path], embedder: FrameEmbedder, work: Path) -> dict[str, float]:
    """3. The pipeline's extraction stages on one partition, per video; how fast its stored frames can be
    read for the GPU."""
    extraction.WORKERS = demux_plan().workers
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        stages = extraction.extract(paths, Path(tmp), embedder)
        reading = reading_rates(FeatureStore(Path(tmp)).group("bench", "train"), embedder.batch_size)
    total = extraction.stage_total(stages)
    seconds = sum(_duration(p) for p in paths)
    print(f"3. end-to-end on {embedder.device} ({embedder.precision}, {extraction.WORKERS} demux workers): "
          f"{total / len(paths):.2f} s per {seconds / len(paths):.0f}-s video, {seconds / total:.0f}× real "
          f"time (demux {stages['demux']:.1f} s, log-mel {stages['log_mel']:.1f} s, embeddings "
          f"{stages['embeddings']:.1f} s for {len(paths)} videos; {extraction.load()})")  # fmt: skip
    print("   stored frames read and decoded for the network (frames/s): "
          + ", ".join(f"{n} reader{'s' * (n > 1)} {rate:,.0f}" for n, rate in reading.items())
          + f"; the stage uses {frame_readers(embedder.device.type)} on {embedder.device.type}")  # fmt: skip
    return {"seconds_per_video": total / len(paths), "video_seconds": seconds / len(paths), **stages,
            "reading_frames_per_s": reading}  # fmt: skip


def projection(figures: dict[str, Any], scale_json: Path) -> None:
    """5. ``bench/scale.py``'s projection with the measured Inception rate instead of the assumed one."""
    if not scale_json.exists():
        skipped("5. projection", f"no {scale_json} (run `make bench-scale` on the CPU machine first)")
        return
    fps = figures.get("inception_best_fps")
    if not fps:
        skipped("5. projection", "no GPU Inception rate measured")
        return
    try:
        import scale  # bench/scale.py

        scale.ASSUMED_GPU_FPS = fps  # the one assumption a GPU run replaces
        print(f"5. projection with the measured {fps:,.0f} frames/s ({figures.get('inception_best', '')}):")
        scale.projection(json.loads(scale_json.read_text()))
    except ImportError as exc:
        skipped("5. projection", f"{exc} here: run `python bench/gpu.py --projection <gpu.json>` where it is")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI: tiny corpus, one small batch, no compile")
    parser.add_argument("--out", default="bench/out", help="corpus and gpu.json go here")
    parser.add_argument("--scale-json", default="bench/out/scale.json", help="bench/scale.py's figures")
    parser.add_argument("--projection", metavar="GPU_JSON", help="only the projection, from a GPU run")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.projection:
        projection(json.loads(Path(args.projection).read_text()), Path(args.scale_json))
        return
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "no CUDA device: GPU parts are skipped"
    print(f"bench/gpu.py{' --quick' if args.quick else ''}: torch {torch.__version__}, {device}; "
          f"{usable_cores()} cores, ffmpeg {'found' if shutil.which('ffmpeg') else 'MISSING'}")  # fmt: skip
    videos, seconds = (2, 4.0) if args.quick else (16, 60.0)
    batches = (8,) if args.quick else (32, 64, 128, 256)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"quick": args.quick, "device": device, "cores": usable_cores()}
    if not shutil.which("ffmpeg"):
        print("   no ffmpeg binary: the corpus cannot be made, decode and end-to-end are skipped")
        paths: list[Path] = []
    else:
        paths = [extraction.make_video(corpus / f"g{i:02d}_{seconds:g}s.mp4", seconds, i)
                 for i in range(videos)]  # fmt: skip
        figures["decode_frames_per_s"] = decode_section(paths, cuda)

    embedder = FrameEmbedder("random", "auto", max(batches), precision="auto", runtime="torch")
    if paths:
        real = demux(paths[0], extraction.PARAMS).frames[: max(batches)]
    else:
        real = np.random.default_rng(0).integers(0, 255, (8, 224, 224, 3)).astype(np.uint8)
    rates = extraction.inception_table(embedder, real, batches, compiled=cuda and not args.quick,
                                       openvino=False, label="2")  # fmt: skip
    figures["inception_frames_per_s"] = rates
    if cuda:
        best = max(((name, b) for name, per in rates.items() for b in per), key=lambda k: rates[k[0]][k[1]])
        figures["inception_best"] = f"{best[0]}, batch {best[1]}"
        figures["inception_best_fps"] = rates[best[0]][best[1]]
    if paths:
        figures["end_to_end"] = end_to_end(paths, embedder, out)
    train_on = torch.device("cuda" if cuda else "cpu")
    print(f"4. training input ({extraction.load()})")
    workers, epochs = ((0, 1), 2) if args.quick else ((0, 2, 4), 3)
    figures["training_input"] = extraction.streaming_input(out, train_on, workers, epochs, quick=args.quick)
    (out / "gpu.json").write_text(json.dumps(figures, indent=1, default=float))
    print(f"   figures: {out / 'gpu.json'}")
    projection(figures, Path(args.scale_json))
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
