#!/usr/bin/env bash
# Build the images with whichever engine this machine has (podman, else docker).
#   bash scripts/images.sh [gateway] [gpu]        (both by default; `make images`)
# SMI_RELEASE: their tag (default: the project's version in pyproject.toml), for
# deploy/compose.yaml (SMI_RELEASE in deploy/.env) and your registry; each is tagged
# :latest too, for `podman run smi-gateway` on this machine.
# BASE_IMAGE: the base of both (python:3.11-slim). Where no registry is reachable
# and podman is the engine, a base is made from Debian's own packages (mmdebstrap)
# and kept as localhost/smi-python-base.
# With podman, CONTAINERS_CONF names deploy/podman/containers.conf (runc, ulimits these
# machines accept) unless set: `podman run` needs the same (docs/OPERATIONS.md, "Deploying").
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gateway gpu)
RELEASE=${SMI_RELEASE:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)}
STAGE_LABEL=org.sell-my-images.stage=wheel  # the Dockerfiles' build stage

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
# wheels are not downloaded again where the machine has them. They go in as a pip
# configuration file, a build secret mounted only while pip runs (the Dockerfiles'
# `RUN --mount=type=secret,id=pipconf`), and their folders as read-only volumes: neither
# is written into a layer or the image's history, as a build argument would be.
mirrors=$(pip3 config get global.extra-index-url 2>/dev/null | tr ' ' '\n' | grep '^file://' || true)
pipconf=$(mktemp)
trap 'rm -f "$pipconf"' EXIT
if [ -n "$mirrors" ] && [ "$ENGINE" = podman ]; then
  for mirror in $mirrors; do
    root=$(dirname "${mirror#file://}")
    [ -d "$root" ] && build+=(-v "$root:$root:ro")
  done
  printf '[global]\nextra-index-url = %s\n' "$(echo $mirrors)" > "$pipconf"
fi
build+=(--secret "id=pipconf,src=$pipconf")
for target in "${targets[@]}"; do
  case "$target" in
    gateway) file=Dockerfile.gateway tag=smi-gateway ;;
    gpu) file=Dockerfile.gpu tag=smi-worker ;;
    *) echo "images: unknown image $target (gateway, gpu)" >&2; exit 2 ;;
  esac
  started=$(date +%s)
  "${build[@]}" ${BUILD_ARGS:-} -f "$file" -t "$tag:$RELEASE" -t "$tag:latest" .
  # The build stage's image (the wheel), untagged and of no further use.
  "$ENGINE" image prune --force --filter "label=$STAGE_LABEL" >/dev/null
  echo "images: $tag:$RELEASE built from $BASE in $(( $(date +%s) - started )) s" >&2
done
