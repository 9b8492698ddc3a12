"""Weights: manifest, download with sha256 check, ncnn conversion, safe loading."""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import sample
from upscaler.errors import ChecksumMismatchError, DownloadError, UnknownModelError, WeightsError
from upscaler.models.ncnn import convert_ncnn, ncnn_models_dir
from upscaler.models.registry import ModelRegistry
from upscaler.models.weights import fetch_weights, load_network, read_state_dict
from upscaler.pipeline.options import Overrides
from upscaler.pipeline.upscaler import Upscaler

MANIFEST = """
default = "tiny"
[models.tiny]
arch = "SRVGGNetCompact"
scale = 4
url = "{url}"
sha256 = "{sha256}"
params = {{ num_in_ch = 3, num_out_ch = 3, num_feat = 4, num_conv = 1, upscale = 4 }}
"""


def test_manifest_lists_upstream_models_with_provenance():
    registry = ModelRegistry.load()
    assert registry.default_name == "RealESRGAN_x4plus"
    x4plus = registry.get()
    assert (x4plus.arch.name, x4plus.scale, x4plus.params["num_block"]) == ("RRDBNet", 4, 23)
    assert registry.get("RealESRGAN_x4plus_anime_6B").params["num_block"] == 6
    assert registry.get("realesr-animevideov3").arch.name == "SRVGGNetCompact"
    for spec in registry:
        assert spec.url and spec.url.startswith("https://github.com/xinntao/Real-ESRGAN/")
        assert spec.sha256 and len(spec.sha256) == 64
    assert x4plus.sha256 == "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"


def test_unknown_model_names_the_known_ones():
    registry = ModelRegistry.load()
    with pytest.raises(UnknownModelError, match="RealESRGAN_x4plus"):
        registry.get("RealESRGAN_x8")


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def weights_server() -> Iterator[tuple[str, bytes]]:
    """A loopback HTTP server handing out a real (tiny) weight file."""
    network = (
        ModelRegistry.load()
        .get("realesr-animevideov3")
        .arch.build(
            4, {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_conv": 1, "upscale": 4}
        )
    )
    buffer = io.BytesIO()
    torch.save({"params": network.state_dict()}, buffer)
    handler = type("Handler", (_Handler,), {"payload": buffer.getvalue()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/tiny.pth", handler.payload
    server.shutdown()


def tiny_registry(tmp_path: Path, url: str, sha256: str) -> ModelRegistry:
    (tmp_path / "manifest.toml").write_text(MANIFEST.format(url=url, sha256=sha256))
    return ModelRegistry.load(tmp_path)


def test_fetch_downloads_and_verifies(tmp_path, weights_server):
    url, payload = weights_server
    registry = tiny_registry(tmp_path, url, hashlib.sha256(payload).hexdigest())
    seen: list[int] = []
    path = fetch_weights(registry, registry.get(), progress=lambda done, total: seen.append(done))
    assert path.read_bytes() == payload and seen[-1] == len(payload)
    network = load_network(registry.get(), registry.weights_path(registry.get()))
    assert not network.training


def test_fetch_refuses_a_mismatched_file_and_leaves_nothing(tmp_path, weights_server):
    url, _ = weights_server
    registry = tiny_registry(tmp_path, url, "0" * 64)
    with pytest.raises(ChecksumMismatchError, match="expected 0000"):
        fetch_weights(registry, registry.get())
    assert not registry.weights_dir.exists() or list(registry.weights_dir.iterdir()) == []


def test_fetch_offline_fails_clearly_and_leaves_nothing(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = tiny_registry(tmp_path, f"http://127.0.0.1:{port}/tiny.pth", "0" * 64)
    with pytest.raises(DownloadError, match="cannot download tiny"):
        fetch_weights(registry, registry.get(), timeout_s=5)
    assert list(registry.weights_dir.iterdir()) == []


def test_missing_weights_say_how_to_get_them(tmp_path):
    registry = tiny_registry(tmp_path, "http://127.0.0.1:9/x", "0" * 64)
    with pytest.raises(WeightsError, match="smi-models fetch tiny"):
        registry.weights_path(registry.get())


class Payload:
    """Anything but tensors: weights_only loading must refuse to build it."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_never_unpickles_code(tmp_path, capsys):
    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(pickle.dumps({"params": Payload()}))
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(hostile)
    assert "this must never run" not in capsys.readouterr().out


def test_weights_for_another_network_are_refused(registry):
    anime = registry.get("RealESRGAN_x4plus_anime_6B")
    x4plus = registry.get("RealESRGAN_x4plus")
    with pytest.raises(WeightsError, match="does not fit"):
        load_network(anime, registry.converted_path(x4plus))


def test_ncnn_conversion_loads_strictly_and_matches_the_blob(registry):
    spec = registry.get("realesr-animevideov3")
    network = spec.build()
    folder = ncnn_models_dir()
    state = convert_ncnn(folder / f"{spec.ncnn}.param", folder / f"{spec.ncnn}.bin", network)
    network.load_state_dict(state, strict=True)
    # 18 convolutions and 17 PReLU slopes, in state_dict order.
    assert len(state) == 18 * 2 + 17
    assert state["body.1.weight"].shape == (64,)
    assert state["body.34.weight"].shape == (48, 64, 3, 3)
    assert 0 < float(state["body.1.weight"].abs().mean()) < 1  # real slopes, not zeros


def test_ncnn_conversion_refuses_another_networks_file(registry, tmp_path):
    anime, x4plus = registry.get("RealESRGAN_x4plus_anime_6B"), registry.get("RealESRGAN_x4plus")
    folder = ncnn_models_dir()
    with pytest.raises(WeightsError, match="weight arrays"):
        convert_ncnn(folder / f"{anime.ncnn}.param", folder / f"{anime.ncnn}.bin", x4plus.build())
    truncated = tmp_path / "short.bin"
    truncated.write_bytes((folder / f"{anime.ncnn}.bin").read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="ends early"):
        convert_ncnn(folder / f"{anime.ncnn}.param", truncated, anime.build())


# -- 2x ------------------------------------------------------------------------------------


def test_2x_without_its_weights_is_the_4x_output_resized_as_upstream_s_outscale(registry):
    """RealESRGAN_x2plus's weights exist only as the project's GitHub file: without them,
    2x is the 4x model's output resized with Lanczos (inference_realesrgan.py --outscale 2)."""
    assert not registry.official_path(registry.get("RealESRGAN_x2plus")).exists()
    crop = np.ascontiguousarray(sample("chelsea")[100:124, 180:212])
    two = Upscaler.load(registry, "RealESRGAN_x2plus", precision="fp32")
    four = Upscaler.load(registry, "RealESRGAN_x4plus", precision="fp32")
    assert (two.spec.name, two.outscale) == ("RealESRGAN_x4plus", 2)
    made = two.upscale(crop).pixels
    assert made.shape == (48, 64, 3) and made.dtype == np.uint8
    expected = cv2.resize(four.upscale(crop).pixels, (64, 48), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(made, expected)


def test_2x_weights_when_present_load_strictly_and_run_as_basicsr_s_2x_network(registry, tmp_path):
    """Weights of x2plus's exact shapes (made here: the official file cannot be fetched),
    found in the weights folder, are used instead of the fallback, load strictly and give
    what basicsr's RRDBNet(scale=2) gives on the same weights and input."""
    from basicsr.archs.rrdbnet_arch import RRDBNet

    spec = registry.get("RealESRGAN_x2plus")
    torch.manual_seed(2)
    reference = RRDBNet(scale=2, **spec.params).eval()
    with torch.no_grad():  # small weights keep the untrained network's output in range
        for tensor in reference.state_dict().values():
            tensor.mul_(0.1)
    torch.save({"params_ema": reference.state_dict()}, tmp_path / "RealESRGAN_x2plus.pth")
    own = ModelRegistry.load(None, tmp_path)
    two = Upscaler.load(own, "RealESRGAN_x2plus", precision="fp32", options=Overrides(tile=0))
    assert (two.spec.name, two.spec.scale, two.outscale) == ("RealESRGAN_x2plus", 2, 2)
    pixels = np.ascontiguousarray(sample("chelsea")[100:124, 180:212])
    made = two.upscale(pixels).pixels
    with torch.no_grad():
        source = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        expected = reference(source)[0].clamp(0, 1).permute(1, 2, 0).mul(255).round()
    assert made.shape == (48, 64, 3)
    assert np.abs(made.astype(int) - expected.numpy().astype(int)).max() <= 1
