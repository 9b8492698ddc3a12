"""Signed webhook deliveries with retries, and the faults tests ask for.

A delivery is ``POST`` of the event JSON with ``Stripe-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload" under the endpoint
secret>``, as Stripe signs. Non-2xx answers and connection errors are
retried with exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class Faults:
    """Misbehaviour to inject, all off by default."""

    error_rate: float = 0.0  # share of API calls answered 500 (before any effect)
    rate_limit_rate: float = 0.0  # share answered 429
    latency_s: float = 0.0  # added to every API call
    webhook_copies: int = 1  # each event delivered this many times, at once
    reorder_webhooks: bool = False  # deliver events in batches, newest first
    rng: random.Random = field(default_factory=random.Random)

    def roll(self) -> int | None:
        """The error status to answer now, if any."""
        draw = self.rng.random()
        if draw < self.error_rate:
            return 500
        if draw < self.error_rate + self.rate_limit_rate:
            return 429
        return None


@dataclass
class DeliveryRecord:
    event_id: str
    event_type: str
    attempt: int
    status: int | None
    error: str | None = None


class WebhookSender:
    """Delivers events to one endpoint from worker threads."""

    def __init__(
        self,
        url: str | None,
        secret: str,
        faults: Faults,
        *,
        max_attempts: int = 8,
        backoff_s: float = 0.25,
        max_backoff_s: float = 10.0,
        reorder_window_s: float = 0.3,
    ) -> None:
        self.url = url
        self.secret = secret
        self.faults = faults
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.reorder_window_s = reorder_window_s
        self.log: list[DeliveryRecord] = []
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook")
        self._client = httpx.Client(timeout=10.0)
        self._held: list[dict[str, Any]] = []
        self._held_lock = threading.Lock()
        self._closed = False

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event for delivery (returns at once)."""
        if not self.url or self._closed:
            return
        if self.faults.reorder_webhooks:
            with self._held_lock:
                self._held.append(event)
                first = len(self._held) == 1
            if first:
                timer = threading.Timer(self.reorder_window_s, self._release_reordered)
                timer.daemon = True
                timer.start()
            return
        self._dispatch(event)

    def _release_reordered(self) -> None:
        with self._held_lock:
            held, self._held = self._held, []
        for event in reversed(held):  # newest first, each one delivered before the next
            wait(self._dispatch(event))

    def _dispatch(self, event: dict[str, Any]) -> list[Future[None]]:
        payload = json.dumps(event).encode()
        return [
            self._pool.submit(self._deliver, event, payload)
            for _ in range(max(1, self.faults.webhook_copies))
        ]

    def _deliver(self, event: dict[str, Any], payload: bytes) -> None:
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            if self._closed:
                return
            status, error = None, None
            try:
                response = self._client.post(
                    str(self.url),
                    content=payload,
                    headers={
                        "Content-Type": "application/json",
                        "Stripe-Signature": sign_payload(payload, self.secret),
                        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    },
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                error = str(exc) or type(exc).__name__
            self.log.append(DeliveryRecord(event["id"], event["type"], attempt, status, error))
            if status is not None and 200 <= status < 300:
                return
            log.info(
                "webhook %s to %s failed (%s), attempt %d",
                event["id"],
                self.url,
                status or error,
                attempt,
            )
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
