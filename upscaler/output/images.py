"""Writing images: JPEG, PNG and WebP, from the pixels ``shared.images`` reads.

    >>> fmt = output_format(Path("cat-4x.png"))      # "png"
    >>> ensure_encodable(channels, dtype, fmt)        # refuses before minutes of work
    >>> data = encode_image(pixels, fmt)

Pixels are numpy arrays in RGB order: HxW (L), HxWx2 (LA), HxWx3 (RGB) or
HxWx4 (RGBA), uint8 or uint16 (16-bit PNG).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from upscaler.errors import OutputFormatError
from upscaler.output.png import encode_png

EXTENSIONS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}


def output_format(path: Path) -> str:
    """The format named by a file's extension; ``OutputFormatError`` if we cannot write it."""
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise OutputFormatError(
            f"cannot write {path.name}: use a .png, .jpg, .jpeg or .webp file name"
        ) from None


def ensure_encodable(channels: int, dtype: np.dtype, fmt: str) -> None:
    """Raise ``OutputFormatError`` if ``fmt`` would drop the alpha channel or the depth.

    Cheap, so callers check before spending minutes on the pixels.
    """
    if dtype == np.uint16 and fmt != "png":
        raise OutputFormatError(f"16-bit images can only be written as PNG, not {fmt}")
    if fmt == "jpeg" and channels in (2, 4):
        raise OutputFormatError("JPEG cannot hold an alpha channel; write PNG or WebP")
    if fmt == "webp" and channels in (1, 2):
        raise OutputFormatError("WebP cannot hold a grayscale image; write PNG or JPEG")


def encode_image(pixels: np.ndarray, fmt: str, *, quality: int = 95) -> bytes:
    """Encode RGB-ordered pixels; refuse formats that would drop alpha or depth.

    PNG goes through ``upscaler.output.png`` (strips deflated on every core);
    JPEG and WebP through OpenCV.
    """
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    ensure_encodable(channels, pixels.dtype, fmt)
    if fmt == "png":
        return encode_png(pixels)
    bgr = pixels
    if channels == 3:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif channels == 4:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    params = {
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
    }[fmt]
    ok, encoded = cv2.imencode(f".{fmt}", bgr, params)
    if not ok:
        raise OutputFormatError(f"the {fmt} encoder refused a {pixels.shape} {pixels.dtype} image")
    return encoded.tobytes()
