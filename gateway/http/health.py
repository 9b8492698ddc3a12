"""``GET /healthz`` (the process answers), ``/readyz`` (what it needs answers), ``/metrics``.

``/readyz`` checks the database (``SELECT 1``), the broker (its queues, on a
connection of its own) and storage (a small object written, read, deleted),
each with a short timeout. Its status is what the process can serve, and
that takes the database alone: with the broker away, checkouts, payments,
status pages and refunds go on (the outbox keeps paid jobs until it is
back), so a broker or storage blip must not take every gateway out of its
load balancer. Where the background threads run in this process, the body
says whether they all run (``background``), reported, not required. The body
names each, and metrics and alerts report them:

    200 {"ready": true, "checks": {"database": "ok", "broker": "unavailable", "storage": "ok"}}
    503 {"ready": false, "checks": {"database": "unavailable", ...}}

Anyone may ask, so the answer names only what is down: why (an exception's
text holds hosts, ports, drivers, bucket names) goes to the log.

``/metrics`` holds the shop's revenue, refunds and disputes: it answers only
``Authorization: Bearer $SMI_METRICS_TOKEN`` (401 otherwise, and always
while no token is set).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import UnauthorizedError
from gateway.http.openapi import (
    BOOLEAN,
    METRICS,
    Answer,
    Header,
    Operation,
    described,
    obj,
    schema,
    string,
)
from gateway.http.requests import services_of
from gateway.images.storing import free_bytes
from gateway.metrics import render
from gateway.services import Services
from shared.topology import UPSCALE_QUEUE

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 3.0
UNAVAILABLE = "unavailable"

CHECK = string("ok, or unavailable (why goes to the log)", enum=["ok", UNAVAILABLE])
READINESS = schema(
    "Readiness",
    obj(
        ("ready", "checks"),
        ready={"type": "boolean", "description": "whether the database answers"},
        checks=obj(
            ("database", "broker", "storage"),
            database=CHECK,
            broker=CHECK,
            storage=CHECK,
            background={
                **CHECK,
                "description": "the background threads, where they run in this process",
            },
        ),
    ),
)


@described(
    Operation(
        "healthz",
        "The process answers",
        tags=("operations",),
        answers={200: Answer("alive", obj(("ok",), ok=BOOLEAN))},
    )
)
async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


@described(
    Operation(
        "readyz",
        "What the process needs answers: the database (required), the broker and storage",
        tags=("operations",),
        answers={
            200: Answer("ready: the database answers", READINESS),
            503: Answer("not ready: the database does not answer", READINESS),
        },
    )
)
async def readyz(request: Request) -> Response:
    checks = await run_in_threadpool(readiness, services_of(request))
    background = getattr(request.app.state, "background", None)
    if background is not None:
        problem = background.problem()
        if problem is not None:
            log.warning("not ready: %s", problem)
        checks["background"] = "ok" if problem is None else UNAVAILABLE
    ready = checks["database"] == "ok"  # the broker and storage: reported, not required
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def readiness(services: Services) -> dict[str, str]:
    """Each dependency: ``ok``, or ``unavailable`` (why is logged, never answered)."""
    checks: dict[str, str] = {}
    for name, check in (
        ("database", lambda: _database(services)),
        ("broker", lambda: services.broker.queue_stats([UPSCALE_QUEUE.name], READY_TIMEOUT_S)),
        ("storage", services.storage.check),
    ):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # each failure is reported, none stops the others
            log.warning("not ready: the %s does not answer: %s: %s", name, type(exc).__name__, exc)
            checks[name] = UNAVAILABLE
    return checks


def _database(services: Services) -> Any:
    with services.engine.connect() as connection:
        return connection.execute(text("SELECT 1")).scalar_one()


@described(
    Operation(
        "metrics",
        "Prometheus metrics of the gateway (of all its processes)",
        tags=("operations",),
        security=METRICS,
        answers={
            200: Answer(
                "the text exposition format",
                {"type": "string"},
                media_type="text/plain",
                headers={"Content-Type": Header("text/plain; version=0.0.4; charset=utf-8")},
            )
        },
        errors={401: "unauthorized: the metrics token is missing or wrong (or none is set)"},
    )
)
async def metrics(request: Request) -> Response:
    services = services_of(request)
    token = services.config.metrics_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if (
        not token
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), token.encode())
    ):
        raise UnauthorizedError("metrics token required", realm="smi-metrics")
    config = services.config
    body, content_type = await run_in_threadpool(
        render,
        services.sessions,
        services.broker,
        lambda: free_bytes(config, services.storage),
        config.min_free_bytes,
        services.storage.check,
    )
    return Response(body, media_type=content_type)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
