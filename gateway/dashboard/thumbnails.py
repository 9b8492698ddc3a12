"""Small JPEG copies of an order's source and result, for its dashboard page.

    thumbnails = Thumbnails(storage)
    data = thumbnails.of(key)            # None when the image is gone or too large to shrink

A result can be 16384x16384 pixels: its header is read first, and one
over ``MAX_PIXELS`` (more than a gateway should decode to show 320 pixels)
gets no thumbnail. One image is decoded at a time per process, and the
last few thumbnails are kept in memory; the page only asks for an image the
job still has (an erased or expired one is never shown, cached or not).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image

from shared.images import ImageError, probe_image
from shared.storage import Storage

SIDE = 320
MAX_PIXELS = 70_000_000  # under Pillow's own decompression-bomb warning (89 MP)
KEEP = 64


class Thumbnails:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._decoding = threading.Lock()

    def of(self, key: str) -> bytes | None:
        """A JPEG at most ``SIDE`` pixels on its longer side; blocking."""
        with self._decoding:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            try:
                data = self.storage.get(key)
            except (OSError, KeyError):
                return None
            try:
                probe_image(data, max_pixels=MAX_PIXELS)
                with Image.open(io.BytesIO(data)) as image:
                    image.draft("RGB", (SIDE, SIDE))  # JPEG decodes at a fraction of its size
                    image.thumbnail((SIDE, SIDE))
                    small = image.convert("RGB")
                    out = io.BytesIO()
                    small.save(out, "JPEG", quality=82)
            except (ImageError, OSError, ValueError, Image.DecompressionBombError):
                return None
            self._cache[key] = out.getvalue()
            while len(self._cache) > KEEP:
                self._cache.popitem(last=False)
            return self._cache[key]
