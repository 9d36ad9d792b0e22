"""``bench/gpu.sh``, the one command a lent GPU machine runs (issue #12), runs on CPU too: its quick mode
measures what a CPU can and says, for each GPU part, that it was skipped and why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PYTHON = Path(__file__).resolve().parent / "gpu_image_python.py"  # the lent machine's packages only


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_gpu_bench_runs_on_cpu_and_says_what_it_skipped(tmp_path: Path) -> None:
    """Under the lent machine's Python packages only (its image's and what ``bench/gpu.sh`` carries: see
    ``gpu_image_python.py``), so a module the recipe fails to bring fails here."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{IMAGE_PYTHON}" "$@"\n')
    python.chmod(0o755)
    run = subprocess.run(
        ["bash", "bench/gpu.sh", "--quick", "--out", str(tmp_path), "--scale-json", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": str(python)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    text = run.stdout
    sections = (
        "1. decode", "CPU ffmpeg, the pipeline's demux", "2. Inception v3 forward",
        "torch bf16 autocast, channels-last", "3. end-to-end", "4. training input",
        "Choi, past its budget", "video model, past its budget", "5. projection: SKIPPED",
    )  # fmt: skip
    for section in sections:
        assert section in text, text
    figures = json.loads((tmp_path / "gpu.json").read_text())
    assert figures["decode_frames_per_s"]["cpu_ffmpeg"] > 0 and figures["end_to_end"]["seconds_per_video"] > 0
    for model in ("Choi", "video model"):  # trained with 0 and 1 workers, the waits measured
        assert set(figures["training_input"][model]) == {"0", "1"}, figures["training_input"]
        assert all(0 < c["input_share"] < 1 for c in figures["training_input"][model].values())
    if not torch.cuda.is_available():
        assert "torchcodec cuda (NVDEC), frames at the instants: SKIPPED — no CUDA device" in text
        assert "FFmpeg NVDEC via PyAV: SKIPPED — no CUDA device" in text


def test_every_cpu_inception_variant_of_make_bench_runs() -> None:
    """``make bench`` section h calls each variant as the bench does (OpenVINO's included): a runtime
    whose calling convention changes breaks here, not at the end of a 10-minute benchmark."""
    import importlib.util

    import numpy as np

    from instrec_pipeline.features.visual import FrameEmbedder

    spec = importlib.util.spec_from_file_location("extraction", ROOT / "bench" / "extraction.py")
    extraction = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(extraction)  # type: ignore[union-attr]
    embedder = FrameEmbedder("random", "cpu", 3)
    frames = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3)).astype(np.uint8)
    variants = extraction.inception_variants(embedder, compiled=False, openvino=True)
    assert {"OpenVINO fp32", "OpenVINO bf16"} <= set(variants)
    for name, (forward, fmt) in variants.items():
        x = torch.from_numpy(frames) if fmt is None else extraction.torch_input(embedder, frames, fmt)
        with torch.inference_mode():
            assert tuple(forward(x).shape) == (3, 2048), name


def test_the_gpu_image_hides_what_the_recipe_does_not_carry(tmp_path: Path) -> None:
    """The stand-in image is real: a package installed here but neither on the image nor carried (Dagster)
    cannot be imported or found under it, while a carried one (zarr) and the image's own (torch) can."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import importlib.util\n"
        "print([importlib.util.find_spec(n) is not None for n in ('dagster', 'zarr', 'torch')])\n"
        "import dagster\n"
    )
    run = subprocess.run([sys.executable, str(IMAGE_PYTHON), str(script)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.stdout.strip() == "[False, True, True]", run.stdout + run.stderr
    assert run.returncode != 0 and "No module named 'dagster'" in run.stderr
