#!/usr/bin/env bash
# The GPU figures of issue #12 in one command: decode (CPU ffmpeg vs NVDEC), Inception v3 frames/s
# (float32, bf16, channels-last, torch.compile; batch 32-256), end-to-end per video, and the FCVID /
# YouTube-8M projection (bench/gpu.py says what each is). On a machine without a GPU every GPU part says
# it was skipped, so CI proves the script works: `make bench-gpu` runs `bash bench/gpu.sh --quick`.
#
#   bash bench/gpu.sh [--quick]          install what is missing, then run bench/gpu.py
#   bash bench/gpu.sh --wheels DIR       the same, installing from wheels in DIR only (no network)
#   bash bench/gpu.sh --download DIR     here, with PyPI: fetch those wheels for the lent machine
#
# A lent GPU machine reaches no registry and has its own python3 with torch 2.11 (CUDA 13): bring the
# wheels (`bash bench/gpu.sh --download .whl` here; the device tool carries `.whl`, ~50 MB) and run
# `bash bench/gpu.sh --wheels .whl` there, with a 10-minute timeout: it takes 4-8 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."

# What bench/gpu.py imports beyond torch, torchvision, torchaudio, numpy, pandas and pyyaml (the GPU
# image has those). torchcodec 0.11 is the release built against torch 2.11; PyPI's wheel is its CPU
# build, so its NVDEC row needs the CUDA build from PyTorch's own index (bench/gpu.py says so when absent).
PACKAGES=("av>=18.1,<19" "ffmpeg-python==0.2.0" "future" "torchcodec==0.11.*" "zarr==3.1.6" "numcodecs==0.16.6"
          "donfig" "crc32c" "typing_extensions")
WHEELS="" DOWNLOAD="" ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --download) DOWNLOAD="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
PY=${PYTHON:-$PY}

if [ -n "$DOWNLOAD" ]; then
  # Python 3.12 on x86-64 Linux: the lent machine's (see the device notes); --no-deps: it has the rest.
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DOWNLOAD" "${PACKAGES[@]}"
  du -sh "$DOWNLOAD"
  exit 0
fi

missing() {  # the import names among PACKAGES that this python cannot import
  "$PY" - <<'EOF'
import importlib.util
for name in ("av", "ffmpeg", "torchcodec", "zarr", "numcodecs"):
    if importlib.util.find_spec(name) is None:
        print(name)
EOF
}

QUICK=""
for a in ${ARGS[@]+"${ARGS[@]}"}; do [ "$a" = --quick ] && QUICK=1; done
if [ -z "$QUICK" ] && [ -n "$(missing)" ]; then  # --quick (CI) installs nothing: it runs what is there
  echo "installing: $(missing | tr '\n' ' ')"
  if [ -n "$WHEELS" ]; then
    # Beside the machine's own packages (a target folder), never over its torch.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/instrec-site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/instrec-site${PYTHONPATH:+:$PYTHONPATH}"
  elif ! "$PY" -m pip install -q "${PACKAGES[@]}"; then
    echo "could not install ${PACKAGES[*]}: parts that need them will say so"
  fi
fi
# The project itself from this checkout (the lent machine has no editable install).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py ${ARGS[@]+"${ARGS[@]}"}
