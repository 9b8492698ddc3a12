"""Rate limits: token buckets per client and for everyone, answered with 429 and Retry-After.

    limits = CheckoutLimits(per_client_per_minute=30, burst=10, global_per_minute=600)
    client = client_of(request)     # the address that is counted
    limits.take_client(client)      # before the body is read; or RateLimitedError(retry_after_s)
    limits.take_everyone(client)    # once the request is valid: junk never drains it

Every click on "Buy" fetches and stores an image and creates a job and a
Stripe session, so anonymous clicks are limited: each client address has a
bucket of ``burst`` checkouts refilled at its rate, and all clients share
one more. Buckets live in the process (each gateway process limits its own
share) and are forgotten when full again.

A client is its connection's address: ``X-Forwarded-For`` counts only when
the connection comes from a proxy of ``SMI_TRUSTED_PROXIES`` (none by
default; uvicorn's own proxy handling is off). An IPv6 client is its /64,
the block one subscriber is given.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.requests import Request

from gateway.errors import RateLimitedError
from gateway.http.requests import services_of

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
        """Count one request from ``client`` in both buckets; ``RateLimitedError`` when it must
        wait."""
        self.take_client(client)
        self.take_everyone(client)

    def take_client(self, client: str) -> None:
        """Count one request in ``client``'s own bucket; ``RateLimitedError`` when it must wait."""
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

    def take_everyone(self, client: str) -> None:
        """Count a valid request (``take_client`` counted it already) in everyone's bucket."""
        with self._lock:
            wait = self.everyone.take(self.clock())
            bucket = self.clients.get(client)
            if wait and bucket is not None:
                bucket.tokens += 1  # not this client's fault: give its token back
        if wait:
            raise RateLimitedError(
                f"the shop is very busy; try again in {math.ceil(wait)} s",
                retry_after_s=math.ceil(wait),
            )


Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def client_of(request: Request) -> str:
    """The client a request's limits count (see the module's text)."""
    peer = request.client.host if request.client else ""
    trusted = services_of(request).config.trusted_proxies
    return counted_client(peer, request.headers.getlist("x-forwarded-for"), trusted)


def counted_client(peer: str, forwarded: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client behind ``peer``: ``forwarded``'s nearest hop that is not a trusted proxy,
    when ``peer`` is one; an IPv6 address as its /64."""
    address = _parse(peer)
    if address is None:
        return peer
    if _trusted(address, trusted):
        hops = [hop.strip() for value in forwarded for hop in value.split(",")]
        for hop in reversed(hops):
            said = _parse(hop)
            if said is None:
                break  # not an address: the last proxy's word is all there is
            address = said
            if not _trusted(said, trusted):
                break
    if isinstance(address, IPv6Address):
        return str(ip_network(f"{address}/64", strict=False))
    return str(address)


def _parse(text: str) -> Address | None:
    try:
        address = ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)
