#!/usr/bin/env bash
# Everything GPU-related in one call of a few minutes, downloading nothing:
#   1. CUDA parity with the CPU, fp16/bf16 drift, a real out-of-memory fallback;
#   2. 2000x2000 -> 8000x8000 in fp16 and bf16, against RealESRGANer (fp16) at
#      the same tile and overlap, and in one whole-image pass.
# Needs on the GPU machine: python3 with torch (CUDA), opencv, pillow, tqdm;
# the converted weights in models/weights/ (`make weights` here, then carry
# models/weights); basicsr + realesrgan installed or as wheels in .whl/.
# Results: $OUT (or out/gpu) as JSON, and the tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${OUT:-out/gpu}
mkdir -p "$out_dir"
if [ -d .whl ] && ! python3 -c "import basicsr, realesrgan" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/smi-site .whl/*.whl
  export PYTHONPATH=/tmp/smi-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out_dir/gpu.txt"

python3 scripts/gpu_checks.py "$out_dir" | tee "$out_dir/gpu_checks.txt"

bench() { python3 -m upscaler.bench --input-size 2000 --device cuda --warmup 1 --repeat 3 "$@"; }
bench --precision fp16 --tile 512 --batch 4 --baseline --no-seams --json "$out_dir/bench-fp16.json"
bench --precision bf16 --tile 512 --batch 4 --json "$out_dir/bench-bf16.json"
bench --precision fp16 --tile 0 --batch 1 --json "$out_dir/bench-fp16-whole.json"
python3 -m upscaler.bench --input-size 512 --device cuda --precision fp16 --tile 128 \
  --baseline --warmup 1 --json "$out_dir/bench-seams-512.json"
