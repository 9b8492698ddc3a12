"""``Periodic``: a loop that calls one step again and again, and survives its errors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

POLL_S = 0.5


@dataclass
class Periodic:
    """Calls ``step`` again and again: at once while it finds work, else every ``interval_s``.

    An exception is logged, handed to ``on_error`` and followed by a growing
    pause (up to ``max_backoff_s``); it never ends the loop.
    """

    name: str
    step: Callable[[], int]
    interval_s: float = POLL_S
    max_backoff_s: float = 30.0
    on_error: Callable[[Exception], None] | None = None
    # When the step now running began (monotonic); None between steps.
    busy_since: float | None = field(default=None, init=False, compare=False)

    def stuck_for(self, now: float | None = None) -> float:
        """Seconds the step now running has run (0 between steps)."""
        since = self.busy_since
        return 0.0 if since is None else (time.monotonic() if now is None else now) - since

    def run(self, stop: threading.Event) -> None:
        backoff = self.interval_s
        while not stop.is_set():
            try:
                self.busy_since = time.monotonic()
                try:
                    done = self.step()
                finally:
                    self.busy_since = None
                backoff = self.interval_s
                if done:
                    continue
            except Exception as exc:
                log.warning("%s failed, again in %.1fs: %s", self.name, backoff, exc, exc_info=True)
                if self.on_error is not None:
                    self.on_error(exc)
                backoff = min(backoff * 2, self.max_backoff_s)
            stop.wait(backoff)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name=self.name, daemon=True)
        thread.start()
        return thread, stop
