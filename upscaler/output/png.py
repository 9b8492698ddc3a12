"""A lossless PNG encoder that deflates horizontal strips in parallel.

    >>> data = encode_png(pixels)                 # HxW[xC] uint8/uint16, RGB order
    >>> data = encode_png(pixels, threads=8)      # strips spread over 8 threads

An 8000x8000 output is 192 MB of pixels; OpenCV's encoder filters and
deflates them on one core (about 6 s at level 3 on the development VMs).
Here every scanline gets PNG's "Up" filter (the byte above subtracted,
computed in numpy), and the image is cut into strips of rows that are
deflated independently, each ending on a byte boundary with a sync flush
(the way pigz parallelises gzip). The strips, joined, are one valid zlib
stream: one IDAT chunk per strip, the zlib header in the first, the
Adler-32 of the whole stream (combined from the strips') after the last.
Any PNG reader decodes it to the same pixels.

Deflate is ISA-L's (``isal``, level 2) where installed, which measured
fastest at the same size as OpenCV's level 3 (README, "PNG encoding");
otherwise the standard zlib at level 1. Both release the GIL, so the
strips' threads run on separate cores.
"""

from __future__ import annotations

import itertools
import os
import struct
import types
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

_deflate_module: types.ModuleType
try:  # the worker extra installs it; without it the standard zlib serves, slower
    from isal import isal_zlib as _deflate_module

    DEFLATE_LEVEL = 2
    DEFLATE_LIBRARY = "isal"
except ImportError:  # pragma: no cover - depends on the installation
    _deflate_module = zlib
    DEFLATE_LEVEL = 1
    DEFLATE_LIBRARY = "zlib"

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Colour type by channel count: gray, gray + alpha, RGB, RGBA.
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
UP_FILTER = 2
# Strips of about this many filtered bytes: enough of them to keep every
# thread busy to the end, each long enough that starting without a
# dictionary costs nothing measurable.
STRIP_BYTES = 4 * 1024 * 1024
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no preset dictionary
ADLER_BASE = 65521


def encode_png(
    pixels: np.ndarray,
    *,
    threads: int | None = None,
    level: int | None = None,
    strip_bytes: int = STRIP_BYTES,
) -> bytes:
    """PNG bytes for HxW, HxWx1..4, uint8 or uint16 pixels (channels in RGB[A] order).

    ``threads`` defaults to the cores this process may use; ``level`` to the
    deflate library's measured best (see the module docstring).
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG pixels must be uint8 or uint16, not {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in COLOR_TYPES:
        raise ValueError(f"PNG pixels must be HxW or HxWxC with C in 1..4, not {pixels.shape}")
    height, width, channels = pixels.shape
    if height < 1 or width < 1:
        raise ValueError(f"an image has a positive size, not {width}x{height}")
    depth = pixels.dtype.itemsize * 8
    # PNG stores 16-bit samples big-endian; each row becomes one run of bytes.
    rows = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">"))
    rows = rows.view(np.uint8).reshape(height, width * channels * pixels.dtype.itemsize)
    level = DEFLATE_LEVEL if level is None else level
    bounds = _strip_bounds(height, rows.shape[1] + 1, strip_bytes)
    work = [
        (rows, start, stop, level, stop == height) for start, stop in itertools.pairwise(bounds)
    ]
    threads = max(1, min(threads or _cpu_count(), len(work)))
    strips = _map(_deflate_strip, work, threads)

    adler = 1
    for strip in strips:
        adler = adler32_combine(adler, strip.adler, strip.length)
    header = struct.pack(">IIBBBBB", width, height, depth, COLOR_TYPES[channels], 0, 0, 0)
    parts = [SIGNATURE, *_chunk(b"IHDR", header)]
    for strip in strips[:-1]:
        parts += [struct.pack(">I", len(strip.body)), b"IDAT", strip.body, _u32(strip.crc)]
    last = strips[-1]
    trailer = _u32(adler)
    parts += [struct.pack(">I", len(last.body) + 4), b"IDAT", last.body, trailer]
    parts += [_u32(zlib.crc32(trailer, last.crc)), *_chunk(b"IEND", b"")]
    return b"".join(parts)


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte runs joined, from each one's Adler-32 (zlib's formula)."""
    remainder = second_length % ADLER_BASE
    sum1 = first & 0xFFFF
    sum2 = (remainder * sum1) % ADLER_BASE
    sum1 += (second & 0xFFFF) + ADLER_BASE - 1
    sum2 += (first >> 16) + (second >> 16) + ADLER_BASE - remainder
    sum1 %= ADLER_BASE
    sum2 %= ADLER_BASE
    return (sum2 << 16) | sum1


def _strip_bounds(height: int, row_bytes: int, strip_bytes: int) -> list[int]:
    rows_per_strip = max(1, strip_bytes // row_bytes)
    return [*range(0, height, rows_per_strip), height]


@dataclass(frozen=True)
class _Strip:
    body: bytes  # its IDAT chunk's data (the first strip's starts with the zlib header)
    crc: int  # CRC-32 of b"IDAT" + body, to be continued over the trailer for the last
    adler: int  # Adler-32 of its filtered bytes
    length: int  # how many filtered bytes


def _deflate_strip(work: tuple[np.ndarray, int, int, int, bool]) -> _Strip:
    """Filter rows ``start:stop`` and deflate them, with the checksums of both."""
    rows, start, stop, level, final = work
    filtered = np.empty((stop - start, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = UP_FILTER
    if start == 0:  # the first scanline's "row above" is zeros: its bytes stay as they are
        filtered[0, 1:] = rows[0]
        first = 1
    else:
        first = 0
    np.subtract(
        rows[start + first : stop], rows[start + first - 1 : stop - 1], out=filtered[first:, 1:]
    )
    data = filtered.reshape(-1).data
    compressor = _deflate_module.compressobj(level, zlib.DEFLATED, -15)
    # A sync flush ends the strip on a byte boundary, so the next strip's
    # independently made blocks can follow it in the same stream.
    body = (ZLIB_HEADER if start == 0 else b"") + compressor.compress(data)
    body += compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    return _Strip(body, zlib.crc32(body, zlib.crc32(b"IDAT")), zlib.adler32(data), data.nbytes)


def _chunk(kind: bytes, body: bytes) -> list[bytes]:
    return [struct.pack(">I", len(body)), kind, body, _u32(zlib.crc32(body, zlib.crc32(kind)))]


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _map(function: Callable[[Any], Any], items: list[Any], threads: int) -> list[Any]:
    if threads == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(threads, thread_name_prefix="png-strip") as pool:
        return list(pool.map(function, items))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
