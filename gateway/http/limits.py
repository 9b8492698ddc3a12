"""Rate limits: token buckets per client and for everyone, answered with 429 and Retry-After.

    limits = CheckoutLimits(per_client_per_minute=30, burst=10, global_per_minute=600)
    limits.take(client_ip)          # or raises RateLimitedError(retry_after_s)

Every click on "Buy" fetches and stores an image and creates a job and a
Stripe session, so anonymous clicks are limited: each client address has a
bucket of ``burst`` checkouts refilled at its rate, and all clients share
one more. Buckets live in the process (each gateway process limits its own
share) and are forgotten when full again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import RateLimitedError

MAX_CLIENTS = 100_000  # buckets kept before the full ones are dropped


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` a second; pure arithmetic on the times given."""

    capacity: float
    rate: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Take a token: 0 if there was one, else the seconds until there will be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


class CheckoutLimits:
    """One bucket per client address and one for all of them."""

    def __init__(
        self,
        *,
        per_client_per_minute: float,
        burst: int,
        global_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        what: str = "checkouts",
    ) -> None:
        self.what = what
        self.rate = per_client_per_minute / 60
        self.burst = burst
        self.clock = clock
        everyone = max(burst, global_per_minute / 6)  # ten seconds' worth at once
        self.everyone = TokenBucket(everyone, global_per_minute / 60, everyone, clock())
        self.clients: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Count one checkout from ``client``; ``RateLimitedError`` when it must wait."""
        with self._lock:
            now = self.clock()
            bucket = self.clients.get(client)
            if bucket is None:
                if len(self.clients) >= MAX_CLIENTS:
                    self.clients = {k: b for k, b in self.clients.items() if not b.full(now)}
                bucket = self.clients[client] = TokenBucket(self.burst, self.rate, self.burst, now)
            wait = bucket.take(now)
            if wait:
                raise RateLimitedError(
                    f"too many {self.what} from you just now; try again in {math.ceil(wait)} s",
                    retry_after_s=math.ceil(wait),
                )
            wait = self.everyone.take(now)
            if wait:
                bucket.tokens += 1  # not this client's fault: give its token back
                raise RateLimitedError(
                    f"the shop is very busy; try again in {math.ceil(wait)} s",
                    retry_after_s=math.ceil(wait),
                )
