"""Rate limits: token buckets per client and for everyone, answered with 429 and Retry-After.

    limits = CheckoutLimits(per_client_per_minute=30, burst=10, global_per_minute=600)
    client = client_of(request)     # the address that is counted
    await limits.take_client(client)    # before the body is read; or RateLimitedError
    async with limits.everyones_share(client):  # once the request is valid: junk never
        ...                                     # drains it, nor a source found unusable

Every click on "Buy" fetches and stores an image and creates a job and a
Stripe session, so anonymous clicks are limited: each client address has a
bucket of ``burst`` checkouts refilled at its rate, and all clients share
one more. On PostgreSQL the buckets are rows every gateway process and host
shares (``DatabaseBuckets``), so the limits hold for the whole fleet; on
SQLite (one machine) each process keeps its own (``MemoryBuckets``). Full
buckets are forgotten (retention deletes the rows).

A client is its connection's address: ``X-Forwarded-For`` counts only when
the connection comes from a proxy of ``SMI_TRUSTED_PROXIES`` (none by
default; uvicorn's own proxy handling is off). An IPv6 client is its /64,
the block one subscriber is given.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from gateway.errors import RateLimitedError, RequestError
from gateway.http.requests import services_of

log = logging.getLogger(__name__)

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


class MemoryBuckets:
    """Token buckets in this process (one gateway process limits its own share)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, capacity: float, rate: float) -> float:
        """Take a token from ``key``'s bucket: 0, or the seconds until there is one."""
        with self._lock:
            now = self.clock()
            bucket = self.buckets.get(key)
            if bucket is None:
                if len(self.buckets) >= MAX_CLIENTS:
                    self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
                bucket = self.buckets[key] = TokenBucket(capacity, rate, capacity, now)
            return bucket.take(now)

    def give_back(self, key: str, capacity: float) -> None:
        with self._lock:
            bucket = self.buckets.get(key)
            if bucket is not None:
                bucket.tokens = min(capacity, bucket.tokens + 1)


class DatabaseBuckets:
    """Token buckets in PostgreSQL (``rate_buckets``): every gateway process and host draws
    from the same ones, on the database's clock. One statement takes a token.

    Should the database not answer, the process's own buckets stand in (logged):
    a limit is never a reason to refuse every customer.
    """

    TAKE = text(
        """
        INSERT INTO rate_buckets (key, tokens, stamp, full_at)
        SELECT :key, :capacity - 1, now_s, now_s + 1 / :rate
        FROM (SELECT EXTRACT(EPOCH FROM clock_timestamp()) AS now_s) AS clock
        ON CONFLICT (key) DO UPDATE SET
            tokens = LEAST(:capacity, rate_buckets.tokens
                + (EXCLUDED.stamp - rate_buckets.stamp) * :rate) - 1,
            stamp = EXCLUDED.stamp,
            full_at = EXCLUDED.stamp + (:capacity + 1 - LEAST(:capacity, rate_buckets.tokens
                + (EXCLUDED.stamp - rate_buckets.stamp) * :rate)) / :rate
        WHERE LEAST(:capacity, rate_buckets.tokens
            + (EXCLUDED.stamp - rate_buckets.stamp) * :rate) >= 1
        RETURNING tokens
        """
    )
    LEFT = text(
        "SELECT tokens + (EXTRACT(EPOCH FROM clock_timestamp()) - stamp) * :rate "
        "FROM rate_buckets WHERE key = :key"
    )
    GIVE_BACK = text(
        "UPDATE rate_buckets SET tokens = LEAST(:capacity, tokens + 1) WHERE key = :key"
    )

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fallback = MemoryBuckets()

    def take(self, key: str, capacity: float, rate: float) -> float:
        values = {"key": key, "capacity": float(capacity), "rate": float(rate)}
        try:
            with self.engine.begin() as connection:
                if connection.execute(self.TAKE, values).first() is not None:
                    return 0.0
                left = connection.execute(self.LEFT, values).scalar_one()
        except SQLAlchemyError as exc:
            log.warning("shared rate limits unavailable, this process's own apply: %s", exc)
            return self.fallback.take(key, capacity, rate)
        return max(0.0, (1 - float(left)) / rate)

    def give_back(self, key: str, capacity: float) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(self.GIVE_BACK, {"key": key, "capacity": float(capacity)})
        except SQLAlchemyError:
            self.fallback.give_back(key, capacity)


class CheckoutLimits:
    """One bucket per client address and one for all of them, of kind ``what``."""

    def __init__(
        self,
        *,
        per_client_per_minute: float,
        burst: int,
        global_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        what: str = "checkouts",
        buckets: MemoryBuckets | DatabaseBuckets | None = None,
    ) -> None:
        self.what = what
        self.rate = per_client_per_minute / 60
        self.burst = burst
        self.everyone = max(burst, global_per_minute / 6)  # ten seconds' worth at once
        self.everyone_rate = global_per_minute / 60
        self.buckets = buckets or MemoryBuckets(clock)

    def take(self, client: str) -> None:
        """Count one request from ``client`` in both buckets; ``RateLimitedError`` when it must
        wait."""
        self.count_client(client)
        self.count_everyone(client)

    async def take_client(self, client: str) -> None:
        """``count_client`` off the event loop (the buckets may be the database's)."""
        await run_in_threadpool(self.count_client, client)

    async def take_everyone(self, client: str) -> None:
        """``count_everyone`` off the event loop."""
        await run_in_threadpool(self.count_everyone, client)

    @asynccontextmanager
    async def everyones_share(self, client: str) -> AsyncIterator[None]:
        """One of everyone's tokens for the work inside; given back when that work finds
        the request invalid after all (its image cannot be sold: a made-up address, a
        404), so junk never drains what honest buyers share."""
        await self.take_everyone(client)
        try:
            yield
        except RequestError:
            await run_in_threadpool(self.buckets.give_back, f"{self.what}:*", self.everyone)
            raise

    def count_client(self, client: str) -> None:
        """Count one request in ``client``'s own bucket; ``RateLimitedError`` when it must wait."""
        wait = self.buckets.take(f"{self.what}:{client}", self.burst, self.rate)
        if wait:
            raise RateLimitedError(
                f"too many {self.what} from you just now; try again in {math.ceil(wait)} s",
                retry_after_s=math.ceil(wait),
            )

    def count_everyone(self, client: str) -> None:
        """Count a valid request (``count_client`` counted it already) in everyone's bucket."""
        wait = self.buckets.take(f"{self.what}:*", self.everyone, self.everyone_rate)
        if wait:
            # Not this client's fault: give its token back.
            self.buckets.give_back(f"{self.what}:{client}", self.burst)
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
