#!/usr/bin/env bash
# The GPU figures of issue #12 in one command: decode (CPU ffmpeg vs NVDEC), Inception v3 frames/s
# (float32, bf16, channels-last, torch.compile; batch 32-256), end-to-end per video, training's wait for
# input with 0-4 DataLoader workers, and the FCVID / YouTube-8M projection (bench/gpu.py says what each
# is). On a machine without a GPU every GPU part says it was skipped, so CI proves the script works:
# `make bench-gpu` runs `bash bench/gpu.sh --quick`.
#
#   bash bench/gpu.sh [--quick]          install what is missing, then run bench/gpu.py
#   bash bench/gpu.sh --from DIR         the same, taking what is missing from DIR only (no network)
#   bash bench/gpu.sh --download DIR     here, with PyPI: fetch it for the lent machine into DIR
#
# A lent GPU machine reaches no registry and has its own python3 with torch 2.11 (CUDA 13): bring the
# packages (`bash bench/gpu.sh --download .whl` here, ~3 min: DIR/packages.tar.xz, 51 MB; the device
# tool carries `.whl`) and run `bash bench/gpu.sh --from .whl` there, with a 10-minute timeout: it takes
# an estimated 5-9 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."

# What bench/gpu.py imports beyond the GPU image's packages (bench/gpu_image.txt: torch, torchvision,
# torchaudio, numpy, pandas, scikit-learn, ...), at the versions the project's own install resolves; a test
# runs bench/gpu.py with only those and these importable. torchcodec 0.11 is the release built against
# torch 2.11; PyPI's wheel is its CPU build, so its NVDEC row needs the CUDA build from PyTorch's own index
# (bench/gpu.py says so when absent).
PACKAGES=("av==18.1.0" "ffmpeg-python==0.2.0" "future" "torchcodec==0.11.*" "zarr==3.1.6" "numcodecs==0.16.6"
          "donfig" "google-crc32c" "typing_extensions>=4.16" "imagecodecs==2026.3.6" "pydantic==2.14.4"
          "pydantic-core==2.50.5" "annotated-types" "typing-inspection")
SITE=/tmp/instrec-site  # beside the machine's own packages, never over its torch
FROM="" DOWNLOAD="" ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM="$2"; shift 2 ;;
    --download) DOWNLOAD="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
PY=${PYTHON:-$PY}

if [ -n "$DOWNLOAD" ]; then
  # Installed here for the lent machine's Python 3.12 on x86-64 Linux (--no-deps: it has the rest), then
  # packed with xz: the wheels take 76 MB, over the device tool's 64 MiB a call; the packed tree 51 MB.
  rm -rf "$DOWNLOAD/site" && mkdir -p "$DOWNLOAD"
  "$PY" -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --no-compile --target "$DOWNLOAD/site" "${PACKAGES[@]}"
  tar -cJf "$DOWNLOAD/packages.tar.xz" -C "$DOWNLOAD/site" . && rm -rf "$DOWNLOAD/site"
  du -sh "$DOWNLOAD/packages.tar.xz"
  exit 0
fi

missing() {  # the import names among PACKAGES that this python cannot import
  "$PY" - <<'EOF'
import importlib.util
for name in ("av", "ffmpeg", "torchcodec", "zarr", "numcodecs", "google_crc32c", "imagecodecs", "pydantic"):
    if importlib.util.find_spec(name) is None:
        print(name)
EOF
}

QUICK=""
for a in ${ARGS[@]+"${ARGS[@]}"}; do [ "$a" = --quick ] && QUICK=1; done
# --quick (CI) installs nothing unless told --from: it runs what is there.
if { [ -z "$QUICK" ] || [ -n "$FROM" ]; } && [ -n "$(missing)" ]; then
  echo "installing: $(missing | tr '\n' ' ')"
  if [ -n "$FROM" ]; then
    mkdir -p "$SITE" && tar -xJf "$FROM/packages.tar.xz" -C "$SITE"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  elif ! "$PY" -m pip install -q "${PACKAGES[@]}"; then
    echo "could not install ${PACKAGES[*]}: parts that need them will say so"
  fi
fi
# The project itself from this checkout (the lent machine has no editable install).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py ${ARGS[@]+"${ARGS[@]}"}
