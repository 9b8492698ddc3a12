#!/usr/bin/env bash
# The GPU run: installs the bundle from .gpu/ (no network), then runs every stage of
# scripts/gpu_run.py within its budget. Results: $OUT/gpu.json and $OUT/gpu.log.
#   on the GPU machine:  bash scripts/gpu_bench.sh                (carry .gpu, from `make gpu-bundle`)
#   rehearsal here:      make gpu-rehearsal                       (--device cpu --tiny)
# Arguments go to gpu_run.py (--budget S, --only STAGES, --device, --tiny).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
out=${OUT:-out/gpu}
mkdir -p "$out"
[ -d .gpu/wheels ] && [ -f .gpu/weights/RealESRGAN_x4plus.ncnn.pth ] \
  || { echo "no bundle in .gpu/: run make gpu-bundle and carry .gpu" | tee -a "$out/gpu.log"; exit 2; }
site=$(mktemp -d /tmp/smi-site.XXXXXX)
# The wheels for this Python only; --no-index: nothing comes from the network.
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" \
  --find-links .gpu/wheels basicsr realesrgan kombu amqp vine fsspec isal simplejpeg >> "$out/gpu.log" 2>&1 \
  || echo "installing the bundle failed (see gpu.log); stages that need it will say so"
export PYTHONPATH="$PWD:$site" PYTHONUNBUFFERED=1 SMI_WEIGHTS_DIR="$PWD/.gpu/weights"
"$PYTHON" scripts/gpu_run.py --out "$out" "$@"
