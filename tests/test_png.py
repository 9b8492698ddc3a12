"""The parallel PNG encoder: any reader gets the same pixels back, whatever the strips."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from conftest import sample
from shared.images import decode_image
from upscaler.output import png
from upscaler.output.png import adler32_combine, encode_png


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk, each CRC checked."""
    assert data[:8] == png.SIGNATURE
    found, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        offset += 12 + length
    return found


layouts = st.tuples(
    st.integers(1, 24), st.integers(1, 24), st.sampled_from([None, 1, 2, 3, 4])
).map(lambda hwc: hwc[:2] if hwc[2] is None else hwc)


@given(
    pixels=st.one_of(
        layouts.flatmap(lambda shape: arrays(np.uint8, shape)),
        layouts.flatmap(lambda shape: arrays(np.uint16, shape)),
    ),
    strip_bytes=st.integers(1, 400),
    threads=st.integers(1, 4),
)
def test_decodes_to_the_same_pixels_whatever_the_strips(pixels, strip_bytes, threads):
    data = encode_png(pixels, strip_bytes=strip_bytes, threads=threads)
    decoded = decode_image(data).pixels
    expected = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    assert decoded.dtype == pixels.dtype
    assert np.array_equal(decoded, expected)
    # One zlib stream across the IDAT chunks, its Adler-32 checked by zlib itself.
    stream = b"".join(body for kind, body in chunks(data) if kind == b"IDAT")
    height = pixels.shape[0]
    row_bytes = pixels[0].size * pixels.itemsize
    assert len(zlib.decompress(stream)) == height * (1 + row_bytes)


def test_a_photo_reads_back_in_pillow_and_opencv():
    photo = sample("chelsea")
    data = encode_png(photo, strip_bytes=64 * 1024, threads=2)
    assert len([kind for kind, _ in chunks(data) if kind == b"IDAT"]) > 3
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), photo)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(bgr[..., ::-1], photo)


def test_about_the_size_of_opencv_level_3_on_a_photo():
    photo = sample("coffee")
    ours = encode_png(photo, strip_bytes=64 * 1024)
    _, theirs = cv2.imencode(".png", photo[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3])
    assert len(ours) <= 1.10 * len(theirs)


def test_the_worker_installs_isal():
    assert png.DEFLATE_LIBRARY == "isal"


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 3))
def test_adler32_combine_matches_zlib(first, second, repeat):
    second *= 1 + repeat * 300  # past 65521 bytes, where the modulus matters
    combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((4, 4), np.float32), "uint8 or uint16"),
        (np.zeros((4, 4, 5), np.uint8), "C in 1..4"),
        (np.zeros((0, 4, 3), np.uint8), "positive size"),
    ],
)
def test_refuses_what_png_cannot_hold(pixels, message):
    with pytest.raises(ValueError, match=message):
        encode_png(pixels)
