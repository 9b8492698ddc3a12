#!/usr/bin/env bash
# Build the images with whichever engine this machine has (podman, else docker).
#   bash scripts/images.sh [gateway] [gpu]        (both by default; `make images`)
# BASE_IMAGE: the base of both (python:3.11-slim). Where no registry is reachable
# and podman is the engine, a base is made from Debian's own packages (mmdebstrap)
# and kept as localhost/smi-python-base.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gateway gpu)

if command -v podman >/dev/null; then
  ENGINE=podman
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  echo "images: neither podman nor a running docker; apt-get install podman buildah runc" >&2
  exit 2
fi

base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  if [ "$ENGINE" = podman ] && ! podman image exists python:3.11-slim \
       && ! podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    if ! podman image exists localhost/smi-python-base; then
      echo "images: no registry; making a Python base from Debian's packages" >&2
      tarball=$(mktemp --suffix=.tar)
      # Debian's Python refuses system-wide pip installs (PEP 668): a venv on PATH.
      mmdebstrap --quiet --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,passwd \
        --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
        bookworm "$tarball" >&2 || { rm -f "$tarball"; exit 1; }
      # pip trusts the system's CA bundle (where a proxy's own CA may be added).
      podman import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        "$tarball" localhost/smi-python-base >/dev/null
      rm -f "$tarball"
    fi
    echo localhost/smi-python-base
    return
  fi
  echo python:3.11-slim
}

BASE=$(base_image) || exit 1
build=("$ENGINE" build --network host --build-arg "BASE_IMAGE=$BASE")
if [ "$ENGINE" = podman ]; then
  # The docker format keeps HEALTHCHECK; pip in the build trusts what the host's pip trusts.
  build+=(--pull=never --format docker -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
# The host's pip mirrors on disk (file:// extra indexes) serve the builds too: PyTorch's
# wheels are not downloaded again where the machine has them.
mirrors=$(pip3 config get global.extra-index-url 2>/dev/null | tr ' ' '\n' | grep '^file://' || true)
if [ -n "$mirrors" ] && [ "$ENGINE" = podman ]; then
  for mirror in $mirrors; do
    root=$(dirname "${mirror#file://}")
    [ -d "$root" ] && build+=(-v "$root:$root:ro")
  done
  build+=(--build-arg "PIP_EXTRA_INDEX_URL=$(echo $mirrors)")
fi
for target in "${targets[@]}"; do
  case "$target" in
    gateway) file=Dockerfile.gateway tag=smi-gateway ;;
    gpu) file=Dockerfile.gpu tag=smi-worker ;;
    *) echo "images: unknown image $target (gateway, gpu)" >&2; exit 2 ;;
  esac
  started=$(date +%s)
  "${build[@]}" ${BUILD_ARGS:-} -f "$file" -t "$tag" .
  echo "images: $tag built from $BASE in $(( $(date +%s) - started )) s" >&2
done
