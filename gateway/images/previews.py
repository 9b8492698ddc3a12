"""Free previews: a square of the buyer's own image, bicubic beside our model, before paying.

    started = start_preview(config, storage, broker, image_url, model, at=None)
    status = preview_status(storage, started["preview_id"])   # "pending", "ready" or "failed"

No job and no money. The gateway fetches the image as a checkout would,
stores it once by its content's sha256, picks the most detailed square
(gradient energy on a small copy; the buyer may pick another) and publishes
a small ``PreviewRequest`` to ``smi.preview``; a worker writes
``previews/ID/before.png`` and ``after.png``. The id is a hash of the
image, model and square, so identical requests share one result. Previews
and their sources are deleted after ``SMI_PREVIEW_KEEP_S``
(``gateway.background.retention``). What they keep is bounded: at most
``SMI_PREVIEW_SQUARES_PER_IMAGE`` squares of one image at a time (each
marked under ``previews/squares/DIGEST/``), and none while the disk is
nearly full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from gateway.config import GatewayConfig
from gateway.errors import NotFoundError, RateLimitedError, RequestError
from gateway.images.sources import fetch_source
from gateway.images.storing import EXTENSIONS, ensure_room, source_policy
from shared.broker import Broker
from shared.messages import PreviewRequest
from shared.models import scale_of
from shared.storage import Storage, preview_prefix_for, preview_source_key_for
from shared.topology import PREVIEW_QUEUE, PREVIEW_TTL_MS

log = logging.getLogger(__name__)

SMALL_SIDE = 256  # the copy the detail is measured on


def most_detailed_square(
    pixels: np.ndarray, size: int, width: int | None = None, height: int | None = None
) -> tuple[int, int]:
    """Top-left corner of the ``size`` square with the most gradient energy.

    ``pixels`` is the picture, or a reduced copy of a ``width`` x ``height`` one
    (``SourceImage.small``); the corner is in the picture's own pixels.
    """
    gray = pixels.astype(np.float32)
    if gray.ndim == 3:
        gray = gray[:, :, : min(3, gray.shape[2])].mean(axis=2)
    rows, cols = gray.shape
    width, height = width or cols, height or rows
    step = max(1, max(rows, cols) // SMALL_SIDE)
    scale = step * width / cols  # picture pixels per pixel measured
    small = gray[::step, ::step]
    energy = np.zeros_like(small)
    energy[:, 1:] += np.abs(np.diff(small, axis=1))
    energy[1:, :] += np.abs(np.diff(small, axis=0))
    window = max(1, int(size // scale))
    rows, cols = small.shape
    if window >= rows or window >= cols:
        return 0, 0
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        table[window:, window:]
        - table[:-window, window:]
        - table[window:, :-window]
        + table[:-window, :-window]
    )
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(min(x * scale, width - size)), int(min(y * scale, height - size))


def start_preview(
    config: GatewayConfig,
    storage: Storage,
    broker: Broker,
    image_url: str,
    model: str | None,
    at: tuple[int, int] | None,
) -> dict[str, Any]:
    """Ask for a preview of ``image_url`` (the square at ``at``, else the most detailed)."""
    offered = config.pricing.models
    model = model or offered[0]
    if model not in offered:
        raise RequestError(f"model {model!r} is not offered here; choose one of {offered}")
    ensure_room(config, storage)
    source = fetch_source(image_url, source_policy(config))
    digest = hashlib.sha256(source.data).hexdigest()
    source_key = preview_source_key_for(digest, EXTENSIONS[source.format])
    if not storage.exists(source_key):
        storage.put(source_key, source.data)
    size = min(config.previews.size, source.width, source.height)
    if at is None:
        x, y = most_detailed_square(source.small, size, source.width, source.height)
    else:
        x = min(max(0, at[0]), source.width - size)
        y = min(max(0, at[1]), source.height - size)
    preview_id = hashlib.sha256(f"{digest}:{model}:{x}:{y}:{size}".encode()).hexdigest()[:32]
    prefix = preview_prefix_for(preview_id)
    meta = {
        "preview_id": preview_id,
        "model": model,
        "scale": scale_of(model),
        "crop": {"x": x, "y": y, "size": size, "width": source.width, "height": source.height},
        "requested_at": time.time(),
        "wait_s": config.previews.wait_s,
    }
    state = _state(storage, prefix)
    if state == "missing":
        _count_square(storage, config, digest, preview_id)
    if state == "missing" or (state == "pending" and _stale(storage, prefix)):
        request = PreviewRequest(preview_id, source_key, prefix, model, x, y, size)
        # Unmade after the minute that ``_stale`` gives it, on every broker (the worker drops
        # it); pending only once queued, so a publish that failed is published when asked again.
        expires_at = time.time() + PREVIEW_TTL_MS / 1000
        broker.publish(
            PREVIEW_QUEUE, request.to_json(), message_id=preview_id, expires_at=expires_at
        )
        storage.put(f"{prefix}/meta.json", json.dumps(meta).encode())
        log.info("preview requested", extra={"preview_id": preview_id, "model": model})
    return _shown(meta, state)


def _count_square(storage: Storage, config: GatewayConfig, digest: str, preview_id: str) -> None:
    """Take one of the image ``digest``'s square slots for ``preview_id`` (its own, if it
    holds one already); ``RateLimitedError`` when every slot is taken (the page offers
    those squares; retention frees slots with the previews, SMI_PREVIEW_KEEP_S later).

    A slot is claimed by writing it only if it is not there (``put(replace=False)``: a
    link on a folder, a conditional PUT on S3), so requests at once, in any number of
    gateway processes, never take more slots than there are."""
    folder = f"previews/squares/{digest}"
    for key in storage.keys(folder):
        try:
            if storage.get(key).decode() == preview_id:
                return
        except FileNotFoundError:  # freed by retention meanwhile
            continue
    limit = config.previews.squares_per_image
    for slot in range(limit):
        try:
            storage.put(f"{folder}/{slot}", preview_id.encode(), replace=False)
            return
        except FileExistsError:
            continue
    raise RateLimitedError(
        f"this image has {limit} previews already; look at those, or ask again later",
        retry_after_s=max(1, int(config.previews.keep_s)),
    )


def preview_status(storage: Storage, preview_id: str) -> dict[str, Any]:
    """What the page shows of a preview; ``NotFoundError`` for one never asked for."""
    prefix = preview_prefix_for(_checked(preview_id))
    try:
        meta = json.loads(storage.get(f"{prefix}/meta.json"))
    except FileNotFoundError as exc:
        raise NotFoundError("no such preview (previews are kept for a while only)") from exc
    return _shown(meta, _state(storage, prefix))


def _shown(meta: dict[str, Any], state: str) -> dict[str, Any]:
    """The page's view: the request's facts and where it stands (just asked: pending)."""
    shown = {key: value for key, value in meta.items() if key != "requested_at"}
    return {**shown, "status": "pending" if state == "missing" else state}


def preview_image_key(preview_id: str, which: str) -> str:
    """The stored ``before`` or ``after`` image of a preview."""
    if which not in ("before", "after"):
        raise NotFoundError("no such preview image")
    return f"{preview_prefix_for(_checked(preview_id))}/{which}.png"


def _checked(preview_id: str) -> str:
    if len(preview_id) != 32 or any(c not in "0123456789abcdef" for c in preview_id):
        raise NotFoundError("no such preview")
    return preview_id


def _state(storage: Storage, prefix: str) -> str:
    if storage.exists(f"{prefix}/after.png"):
        return "ready"
    if storage.exists(f"{prefix}/error.txt"):
        return "failed"
    if storage.exists(f"{prefix}/meta.json"):
        return "pending"
    return "missing"


def _stale(storage: Storage, prefix: str) -> bool:
    """Whether a pending request's message has expired unserved (ask again)."""
    try:
        meta = json.loads(storage.get(f"{prefix}/meta.json"))
    except (FileNotFoundError, ValueError):
        return True
    return bool(time.time() - float(meta.get("requested_at", 0)) > PREVIEW_TTL_MS / 1000)
