"""The gateway's HTTP application.

    app = create_app(GatewayConfig.from_env())

Routes (each module of ``gateway.http`` lists its own):
    POST /api/checkout, GET /api/jobs/{id}, POST /api/jobs/{id}/return    customer
    POST /webhooks/stripe                                                  Stripe's events
    GET  /downloads/{token}                                                signed downloads
    /admin/...                                                             bearer token
    /dashboard/...                     the seller's dashboard (sign-in, session cookie)
    GET  /healthz, /readyz, /metrics, /static/smi-checkout.js
    GET  /openapi.json         the OpenAPI 3.1 description of them all (gateway/http/openapi.py)

The lifespan opens the process's ``Services`` (and migrates a SQLite
database) and, unless ``SMI_BACKGROUND_IN_PROCESS=false``, starts the
background threads on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from gateway.background import Background
from gateway.config import GatewayConfig
from gateway.dashboard.thumbnails import Thumbnails
from gateway.http import (
    admin,
    customer,
    dashboard,
    dashboard_actions,
    downloads,
    health,
    openapi,
    previews,
    seller_auth,
    webhooks,
)
from gateway.http.errors import HANDLERS
from gateway.http.headers import SafeHeaders
from gateway.http.limits import CheckoutLimits, DatabaseBuckets
from gateway.http.openapi import Answer, Header, Operation, described, errors
from gateway.http.requests import StorableText
from gateway.services import Services

STATIC = Operation(
    "staticFile",
    "The storefront's script (smi-checkout.js) and its catalogues (i18n/en.json, ...)",
    tags=("customer",),
    path={"path": "the file: smi-checkout.js, smi-dashboard.css, i18n/fr.json, ..."},
    answers={
        200: Answer(
            "the file",
            {"type": "string"},
            media_type="text/javascript",
            headers={"ETag": Header("its version"), "Last-Modified": Header("its date")},
            also={"application/json": {}, "text/css": {"type": "string"}},
        ),
        304: Answer("not modified (If-None-Match, If-Modified-Since)"),
    },
    errors={**errors(404, 405)},
)


def create_app(config: GatewayConfig) -> Starlette:
    """The gateway for ``config``; resources are made in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await run_in_threadpool(Services.open, config)
        app.state.services = services
        app.state.thumbnails = Thumbnails(services.storage)
        if services.engine.dialect.name == "postgresql":  # the fleet shares its buckets
            shared = DatabaseBuckets(services.engine)
            for kind in ("checkout_limits", "link_limits", "preview_limits"):
                getattr(app.state, kind).buckets = shared
        background = Background.start(services) if config.background_in_process else None
        app.state.background = background  # /readyz reports its threads
        try:
            yield
        finally:
            if background is not None:
                await run_in_threadpool(background.stop)
            services.close()

    app = Starlette(
        routes=[
            *customer.ROUTES,
            *previews.ROUTES,
            *webhooks.ROUTES,
            *downloads.ROUTES,
            *admin.ROUTES,
            *seller_auth.ROUTES,
            *dashboard.ROUTES,
            *dashboard_actions.ROUTES,
            *health.ROUTES,
            *openapi.ROUTES,
            Mount(
                "/static",
                described(STATIC)(StaticFiles(packages=[("gateway", "static")])),
                name="static",
            ),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
        middleware=[
            Middleware(SafeHeaders),
            # Storefront pages on other origins call the customer API from the browser.
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.storefront_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", customer.KEY_HEADER],
                # A shop's script reads how long to wait after a 429.
                expose_headers=["Retry-After"],
                max_age=600,
            ),
            # A NUL in a path or query: 400 at every door, before any lookup.
            Middleware(StorableText),
        ],
    )
    app.state.checkout_limits = CheckoutLimits(**vars(config.checkout_limits))
    # Asking for lost links sends email: the same buckets' size, a bucket set of its own.
    app.state.link_limits = CheckoutLimits(**vars(config.checkout_limits), what="requests")
    limits = config.previews
    app.state.preview_limits = CheckoutLimits(
        per_client_per_minute=limits.per_client_per_minute,
        burst=limits.burst,
        global_per_minute=limits.global_per_minute,
        what="previews",
    )
    return app
