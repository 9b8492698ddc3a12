"""How every long-running process (gateway, its workers, the upscale worker) logs."""

from __future__ import annotations

import logging

SERVICE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_service_logging() -> None:
    """INFO and above to stderr, with the time and the logger's name."""
    logging.basicConfig(level=logging.INFO, format=SERVICE_FORMAT)
