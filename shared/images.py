"""Reading images, the same on both sides: the gateway prices what a worker will decode.

    >>> image = decode_image(Path("cat.jpg").read_bytes(), max_pixels=4096 * 4096)
    >>> image.pixels.shape, image.pixels.dtype, image.mode
    ((300, 451, 3), dtype('uint8'), 'RGB')
    >>> probe_image(data).width                  # the header only
    >>> check_image(data).small.shape            # every pixel checked, little memory

JPEG, PNG and WebP.
Pixels are numpy arrays in RGB order: HxW (L), HxWx2 (LA), HxWx3 (RGB) or
HxWx4 (RGBA), uint8 or uint16 (16-bit PNG). The size is read from the
header and checked against the pixel limit before any pixel is decoded;
EXIF orientation is applied, so the array is the picture as people see it.
A JPEG must hold every pixel its header claims: libjpeg pads a short scan
with grey and calls it a warning, which would let a 3 KB file be priced and
upscaled as 4000x4000; here libjpeg-turbo's warnings are errors.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from shared.settings import SETTINGS

DEFAULT_MAX_PIXELS = int(SETTINGS["MAX_SOURCE_PIXELS"].default or 0)  # 4096x4096
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY_ALPHA = 4  # IHDR colour type


# Errors: the type says the file itself is the problem, so trying again cannot
# help (a worker fails such a job at once; the gateway refuses to sell it).
#
#     ImageError
#     ├── UnsupportedImageError  not JPEG, PNG or WebP, or a layout we cannot keep
#     ├── CorruptImageError      truncated or damaged pixel data
#     └── ImageTooLargeError     over the configured pixel limit


class ImageError(ValueError):
    """Raised when an input image cannot be used."""


class UnsupportedImageError(ImageError):
    """Raised when the input is not a JPEG, PNG or WebP we can decode and re-encode."""


class CorruptImageError(ImageError):
    """Raised when the input's pixel data is truncated or damaged."""


class ImageTooLargeError(ImageError):
    """Raised, before any pixel is decoded, when width x height exceeds the limit."""

    def __init__(
        self, width: int | None, height: int | None, max_pixels: int, pixels: int | None = None
    ) -> None:
        if width and height:
            size = f"{width}x{height} = {width * height:,} pixels"
        elif pixels:  # Pillow's own guard counted them before we saw the sides
            size = f"{pixels:,} pixels"
        else:
            size = "over the limit"
        super().__init__(f"image is {size}; the limit is {max_pixels:,} pixels")
        self.width = width
        self.height = height
        self.max_pixels = max_pixels


@dataclass(frozen=True)
class DecodedImage:
    """Pixels as people see them, and the format they came in."""

    pixels: np.ndarray
    format: str  # "jpeg", "png" or "webp"

    @property
    def mode(self) -> str:
        channels = 1 if self.pixels.ndim == 2 else self.pixels.shape[2]
        return MODES[channels]

    @property
    def bit_depth(self) -> int:
        return self.pixels.dtype.itemsize * 8

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, read without decoding pixels."""

    format: str
    width: int
    height: int


@dataclass(frozen=True)
class CheckedImage:
    """An image whose every pixel is known to be there, and a small copy of it.

    ``width`` and ``height`` are the picture's as people see it (EXIF
    orientation applied); ``small`` is an upright 8-bit gray copy about an
    eighth of each side, enough to measure where its detail is.
    """

    format: str
    width: int
    height: int
    small: np.ndarray


REDUCED = 8  # each side of ``CheckedImage.small`` is about this many times smaller


def check_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> CheckedImage:
    """What a seller's image is, checked as ``decode_image`` would check it, without its pixels.

    The same errors as ``decode_image`` for the same files, but the full
    pixels are never held: a JPEG is decoded once, strictly, at an eighth of
    its size (libjpeg's DCT scaling reads all of its data); a PNG or WebP is
    decoded to 8-bit gray and reduced (16 MB for 16 megapixels, where its
    16-bit RGBA pixels would take 128 MB, twice over).
    """
    image = _open(data, max_pixels)
    with image:
        info = _check_header(image, max_pixels)
        orientation = _orientation(image, data)
    reduced = REDUCED
    if info.format == "jpeg":
        try:
            small = simplejpeg.decode_jpeg(
                data, colorspace="GRAY", strict=True, fastdct=True, min_height=1, min_width=1
            )[:, :, 0]
        except ValueError as exc:
            raise CorruptImageError(f"damaged or truncated JPEG data: {exc}") from exc
    else:
        if min(info.width, info.height) < REDUCED:  # too small to reduce: take it whole
            reduced, flags = 1, cv2.IMREAD_GRAYSCALE
        else:
            flags = cv2.IMREAD_REDUCED_GRAYSCALE_8
        try:
            small = cv2.imdecode(
                np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION
            )
        except cv2.error as exc:
            raise CorruptImageError(f"damaged {info.format.upper()} data: {exc}") from exc
        if small is None or small.size == 0:
            raise CorruptImageError(f"damaged or truncated {info.format.upper()} data")
    expected = (-(-info.height // reduced), -(-info.width // reduced))
    if any(abs(got - want) > 1 for got, want in zip(small.shape[:2], expected, strict=True)):
        raise CorruptImageError(
            f"decoded {small.shape[1]}x{small.shape[0]} at 1/{REDUCED}, "
            f"header says {info.width}x{info.height}"
        )
    upright = np.ascontiguousarray(_apply_orientation(small, orientation))
    width, height = (info.height, info.width) if orientation >= 5 else (info.width, info.height)
    return CheckedImage(info.format, width, height, upright)


def probe_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Format and size from the header; raise if unsupported or over ``max_pixels``."""
    image = _open(data, max_pixels)
    with image:
        return _check_header(image, max_pixels)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a JPEG, PNG or WebP file into RGB-ordered pixels, EXIF orientation applied.

    Raises ``UnsupportedImageError`` for other files, ``ImageTooLargeError``
    (before decoding) over ``max_pixels``, and ``CorruptImageError`` when
    the pixel data is truncated or damaged.
    """
    image = _open(data, max_pixels)
    with image:
        info = _check_header(image, max_pixels)
        orientation = _orientation(image, data)
        if info.format == "png" and _png_bit_depth(data) == 16:
            pixels = _decode_png16(data)
        else:
            pixels = _decode_8bit(image)
    if info.format == "jpeg":
        _check_jpeg_complete(data)
    if pixels.shape[:2] != (info.height, info.width):
        raise CorruptImageError(
            f"decoded {pixels.shape[1]}x{pixels.shape[0]}, header says {info.width}x{info.height}"
        )
    return DecodedImage(np.ascontiguousarray(_apply_orientation(pixels, orientation)), info.format)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked next, with a clearer error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError("not a JPEG, PNG or WebP image") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires first for sizes far beyond any sane limit;
        # its message is "Image size (N pixels) exceeds limit of ...".
        counted = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(counted.group(1)) if counted else None
        raise ImageTooLargeError(None, None, max_pixels, pixels) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"unreadable image header: {exc}") from exc


def _check_header(image: Image.Image, max_pixels: int) -> ImageInfo:
    if image.format not in FORMATS:
        raise UnsupportedImageError(f"{image.format} images are not supported (JPEG, PNG, WebP)")
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImageError(f"image header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels)
    if getattr(image, "n_frames", 1) > 1:
        raise UnsupportedImageError("animated images are not supported")
    return ImageInfo(FORMATS[image.format], width, height)


def _orientation(image: Image.Image, data: bytes) -> int:
    try:
        if image.format == "PNG":
            # Pillow decodes a whole PNG to look for an eXIf chunk after its pixels:
            # walking the chunks finds it without decoding anything.
            exif = Image.Exif()
            raw = _png_chunk(data, b"eXIf")
            if raw is not None:
                exif.load(raw)
        else:
            exif = image.getexif()
        value = int(exif.get(EXIF_ORIENTATION, 1))
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1  # an unreadable EXIF block is no reason to refuse the picture
    return value if 1 <= value <= 8 else 1


def _png_chunk(data: bytes, kind: bytes) -> bytes | None:
    """The body of the first chunk of ``kind`` in a PNG file, without decoding anything."""
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        found = data[at + 4 : at + 8]
        if found == kind:
            return data[at + 8 : at + 8 + length]
        if found == b"IEND":
            break
        at += 12 + length
    return None


def _check_jpeg_complete(data: bytes) -> None:
    """Raise ``CorruptImageError`` if libjpeg-turbo finds the data short or damaged.

    Pillow decodes with libjpeg too, but lets its warnings pass ("premature
    end of data segment", "corrupt JPEG data"): a file whose header claims
    more pixels than its scan holds decodes as grey padding. Decoding once
    more in strict mode (fast DCT: only the warnings matter) refuses it.
    """
    try:
        simplejpeg.decode_jpeg(data, strict=True, fastdct=True, fastupsample=True)
    except ValueError as exc:
        raise CorruptImageError(f"damaged or truncated JPEG data: {exc}") from exc


def _png_bit_depth(data: bytes) -> int:
    # IHDR is always the first chunk: signature(8) length(4) type(4) w(4) h(4) depth(1)
    return data[24] if data.startswith(PNG_SIGNATURE) and len(data) > 24 else 8


def _decode_8bit(image: Image.Image) -> np.ndarray:
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"damaged or truncated image data: {exc}") from exc
    mode = image.mode
    if mode == "P" or mode == "PA":
        mode = "RGBA" if "transparency" in image.info or mode == "PA" else "RGB"
    elif mode in ("1", "I", "F", "I;16", "I;16B", "I;16L"):
        mode = "L"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        mode = "RGBA" if "A" in mode else "RGB"  # CMYK, YCbCr, RGBX ...
    if mode != image.mode:
        image = image.convert(mode)
    return np.asarray(image)


def _decode_png16(data: bytes) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise CorruptImageError("damaged or truncated 16-bit PNG data")
    if decoded.dtype != np.uint16:
        raise CorruptImageError(f"16-bit PNG decoded as {decoded.dtype}")
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        if data[25] == PNG_GRAY_ALPHA:  # OpenCV widens gray + alpha to BGRA: take it back
            return np.ascontiguousarray(decoded[:, :, [0, 3]])
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA)
    if decoded.ndim == 2:
        return decoded
    raise UnsupportedImageError(f"16-bit PNG with {decoded.shape[2]} channels is not supported")


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` into the upright picture.

    The same eight transforms as ``PIL.ImageOps.exif_transpose``.
    """
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return np.swapaxes(pixels, 0, 1)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return np.swapaxes(pixels[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels
