"""Room for the images sold: where they may come from and how big they may be, the file
extension each kind is stored under, and the free disk new work needs."""

from __future__ import annotations

import logging
import shutil

from gateway.config import GatewayConfig
from gateway.errors import StorageFullError
from gateway.images.sources import SourcePolicy
from shared.storage import Storage

log = logging.getLogger(__name__)

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def source_policy(config: GatewayConfig) -> SourcePolicy:
    """Where images may come from and how big they may be, for checkouts and previews."""
    return SourcePolicy(
        config.source_hosts,
        config.max_source_bytes,
        config.max_source_pixels,
        config.fetch_timeout_s,
    )


def free_bytes(config: GatewayConfig, storage: Storage) -> int | None:
    """The least free space among the disks new work writes to: the storage folder's (when
    it is one) and the data folder's (SQLite, the embedded broker); ``None`` for neither."""
    found = [storage.free_bytes()]
    if config.data_dir.exists():
        found.append(shutil.disk_usage(config.data_dir).free)
    known = [free for free in found if free is not None]
    return min(known) if known else None


def ensure_room(config: GatewayConfig, storage: Storage) -> None:
    """``StorageFullError`` (503, try later) when a disk new work writes to holds less than
    ``SMI_MIN_FREE_MB``: refused before anything is fetched or written, so what is running
    (payments, refunds, deliveries) keeps its room."""
    free = free_bytes(config, storage)
    if free is not None and free < config.min_free_bytes:
        log.error("disk nearly full: new work refused", extra={"free_bytes": free})
        raise StorageFullError("the shop cannot take new orders for a moment; try again later")
