"""Image decoding and encoding: formats, layouts, depth, orientation, limits, damage."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import SAMPLES, png_claiming
from shared.images import (
    CorruptImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    check_image,
    decode_image,
    probe_image,
)
from upscaler.errors import OutputFormatError
from upscaler.output.images import encode_image

RNG = np.random.default_rng(3)


def pillow_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def random_pixels(shape, dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("L", (20, 30)), ("LA", (20, 30, 2)), ("RGB", (20, 30, 3)), ("RGBA", (20, 30, 4))],
)
def test_png_round_trip_keeps_layout_exactly(mode, shape):
    pixels = random_pixels(shape)
    decoded = decode_image(encode_image(pixels, "png"))
    assert decoded.mode == mode and decoded.format == "png" and decoded.bit_depth == 8
    assert np.array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3), (20, 30, 4)])
def test_16_bit_png_stays_16_bit(shape):
    pixels = random_pixels(shape, np.uint16)
    decoded = decode_image(encode_image(pixels, "png"))
    assert decoded.bit_depth == 16 and decoded.pixels.dtype == np.uint16
    assert np.array_equal(decoded.pixels, pixels)


def test_16_bit_channels_come_back_in_rgb_order():
    pixels = np.zeros((2, 2, 3), dtype=np.uint16)
    pixels[..., 0] = 60000  # red
    _, encoded = cv2.imencode(".png", pixels[..., ::-1])  # OpenCV writes BGR
    decoded = decode_image(encoded.tobytes()).pixels
    assert (decoded[..., 0] == 60000).all() and (decoded[..., 2] == 0).all()


def test_jpeg_and_webp_decode_a_real_photo():
    photo = Image.open(SAMPLES / "coffee.png").convert("RGB")
    for fmt, tolerance in (("JPEG", 12), ("WEBP", 12)):
        decoded = decode_image(pillow_bytes(photo, fmt, quality=95))
        assert decoded.format == fmt.lower()
        assert decoded.pixels.shape == (photo.height, photo.width, 3)
        assert np.abs(decoded.pixels.astype(int) - np.asarray(photo).astype(int)).mean() < tolerance


def test_webp_with_alpha_keeps_alpha():
    pixels = random_pixels((16, 16, 4))
    decoded = decode_image(encode_image(pixels, "webp"))
    assert decoded.mode == "RGBA"


def test_palette_png_becomes_rgb_or_rgba():
    palette = Image.fromarray(random_pixels((10, 10, 3))).quantize(16)
    assert decode_image(pillow_bytes(palette, "PNG")).mode == "RGB"
    palette.info["transparency"] = 0
    assert decode_image(pillow_bytes(palette, "PNG", transparency=0)).mode == "RGBA"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(orientation):
    image = Image.fromarray(random_pixels((12, 20, 3)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pillow_bytes(image, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert np.array_equal(decode_image(data).pixels, expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_checked_image_is_the_upright_picture_at_an_eighth(fmt, orientation):
    pixels = random_pixels((48, 80, 3))
    pixels[:8, :8] = 255  # a bright corner, to follow through the turns
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pillow_bytes(Image.fromarray(pixels), fmt, exif=exif.tobytes())
    full, checked = decode_image(data), check_image(data)
    assert (checked.width, checked.height) == (full.width, full.height)
    assert checked.small.shape == (full.height // 8, full.width // 8)
    bright = np.unravel_index(np.argmax(full.pixels.mean(axis=2)[::8, ::8]), checked.small.shape)
    assert np.unravel_index(np.argmax(checked.small), checked.small.shape) == bright


# Peak memory from the kernel's VmHWM (ru_maxrss would carry the parent's over exec).
PEAK_GROWTH = """
import re, sys
from pathlib import Path
from shared.images import check_image, decode_image
def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
data = Path(sys.argv[2]).read_bytes()
before = peak_kb()
globals()[sys.argv[1]](data)
print((peak_kb() - before) // 1024)
"""


def test_a_checked_16_bit_rgba_png_costs_a_small_copy_not_its_pixels(tmp_path):
    """4096x4096 16-bit RGBA in 0.1 MB: 128 MB of pixels when decoded (twice over while
    its channels are reordered); checked, 16 MB of gray at most. Each in a fresh process."""
    noise = random_pixels((64, 64, 4), np.uint16)
    path = tmp_path / "big.png"
    path.write_bytes(encode_image(np.tile(noise, (64, 64, 1)), "png"))

    def peak_growth_mb(read: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_GROWTH, read, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout)

    assert peak_growth_mb("decode_image") > 200  # the measure sees a full decode
    assert peak_growth_mb("check_image") < 40


def test_exif_orientation_on_a_jpeg_turns_the_picture():
    image = Image.fromarray(random_pixels((12, 20, 3)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    decoded = decode_image(pillow_bytes(image, "JPEG", exif=exif.tobytes()))
    assert decoded.pixels.shape == (20, 12, 3)


def test_pixel_limit_is_checked_before_decoding():
    data = png_claiming(8000, 6000)  # 48 megapixels claimed, 70 bytes long
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as raised:
        decode_image(data)
    assert time.perf_counter() - started < 1
    assert raised.value.width == 8000 and raised.value.max_pixels == 4096 * 4096
    assert "8000x6000" in str(raised.value)
    # Past Pillow's own bomb guard: still how big, against which limit.
    with pytest.raises(ImageTooLargeError) as raised:
        decode_image(png_claiming(50_000, 50_000))
    assert str(raised.value) == ("image is 2,500,000,000 pixels; the limit is 16,777,216 pixels")
    with pytest.raises(ImageTooLargeError):
        probe_image(encode_image(random_pixels((40, 40, 3)), "png"), max_pixels=1000)
    assert probe_image(encode_image(random_pixels((40, 50, 3)), "png")).width == 50


@pytest.mark.parametrize("read", [decode_image, check_image])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_corrupt(fmt, read):
    data = pillow_bytes(Image.open(SAMPLES / "chelsea.png").convert("RGB"), fmt)
    with pytest.raises(CorruptImageError):
        read(data[: len(data) // 2])


def jpeg_claiming(width: int, height: int, pixels: np.ndarray, **options) -> bytes:
    """A whole JPEG (SOI to EOI) of ``pixels`` whose frame header claims another size."""
    data = bytearray(pillow_bytes(Image.fromarray(pixels), "JPEG", **options))
    frame = next(data.find(marker) for marker in (b"\xff\xc0", b"\xff\xc2") if marker in data)
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("read", [decode_image, check_image])
@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_holding_fewer_pixels_than_its_header_claims_is_corrupt(progressive, read):
    # 80x120 of scan data under a 4000x4000 header: libjpeg pads the rest with grey
    # and only warns, so the file would be priced and upscaled as 16 megapixels.
    data = jpeg_claiming(4000, 4000, random_pixels((120, 80, 3)), progressive=progressive)
    assert probe_image(data).width == 4000  # the header alone cannot tell
    with pytest.raises(CorruptImageError, match="JPEG data"):
        read(data)
    honest = jpeg_claiming(80, 120, random_pixels((120, 80, 3)), progressive=progressive)
    assert (read(honest).width, read(honest).height) == (80, 120)


@pytest.mark.parametrize("read", [decode_image, check_image])
def test_truncated_16_bit_png_is_corrupt(read):
    data = encode_image(random_pixels((64, 64, 3), np.uint16), "png")
    with pytest.raises(CorruptImageError):
        read(data[: len(data) // 2])


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is text", b"%PDF-1.4 not an image at all"],
)
@pytest.mark.parametrize("read", [decode_image, check_image])
def test_non_images_are_unsupported(data, read):
    with pytest.raises(UnsupportedImageError):
        read(data)


@pytest.mark.parametrize("read", [decode_image, check_image])
def test_other_image_formats_are_unsupported(read):
    gif = pillow_bytes(Image.fromarray(random_pixels((8, 8, 3))), "GIF")
    with pytest.raises(UnsupportedImageError, match="GIF"):
        read(gif)


@pytest.mark.parametrize(
    ("shape", "dtype", "fmt", "message"),
    [
        ((4, 4, 4), np.uint8, "jpeg", "alpha"),
        ((4, 4, 2), np.uint8, "jpeg", "alpha"),
        ((4, 4, 3), np.uint16, "jpeg", "16-bit"),
        ((4, 4, 3), np.uint16, "webp", "16-bit"),
        ((4, 4), np.uint8, "webp", "grayscale"),
    ],
)
def test_encoding_refuses_to_drop_alpha_or_depth(shape, dtype, fmt, message):
    with pytest.raises(OutputFormatError, match=message):
        encode_image(np.zeros(shape, dtype=dtype), fmt)
