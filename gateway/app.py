"""The gateway's HTTP application.

    app = create_app(GatewayConfig.from_env())

Routes:
    POST /api/checkout          {"image_url", "return_url"?} -> 201 {"job_id", "checkout_url", ...}
    GET  /api/jobs/{job_id}     status for the customer; ?session_id= fulfils on return
    GET  /downloads/{token}     the 4x result, streamed (signed, expiring link)
    POST /webhooks/stripe       Stripe events, signature checked on the raw body
    /admin/...                  the admin API (``gateway.http.admin``), bearer token
    GET  /healthz
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from devtools.shop import storefront_routes
from gateway.background import Background
from gateway.config import GatewayConfig
from gateway.delivery.links import DownloadLinks
from gateway.errors import (
    DownloadExpiredError,
    DownloadForbiddenError,
    GatewayError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    error_response,
)
from gateway.http.admin import admin_routes
from gateway.money.checkout import parse_checkout_request, start_checkout
from gateway.money.fulfilment import fulfil_checkout
from gateway.money.payments import Payments
from gateway.money.stripe_events import apply_event, verify_event
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.lifecycle import UnknownJobError, get_job
from gateway.store.tables import Job
from shared.jobs import JobStatus
from shared.storage import Storage

log = logging.getLogger(__name__)

CHECKOUT_BODY_LIMIT = 16 * 1024
WEBHOOK_BODY_LIMIT = 1024 * 1024
DOWNLOAD_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


@dataclass
class Services:
    """What handlers need, made once in the lifespan."""

    config: GatewayConfig
    engine: Engine
    sessions: sessionmaker[Session]
    payments: Payments
    storage: Storage
    links: DownloadLinks


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is over {limit:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body is over {limit:,} bytes")
    return bytes(body)


def job_status(job: Job, links: DownloadLinks) -> dict[str, Any]:
    """What the customer's page shows about a job."""

    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "job_id": job.id,
        "status": job.status,
        "message": job.customer_message,
        "decline_code": job.decline_code,
        "progress": job.progress,
        "amount_cents": job.amount_cents,
        "currency": job.currency,
        "width": job.width,
        "height": job.height,
        "created_at": stamp(job.created_at),
        "updated_at": stamp(job.updated_at),
        "paid_at": stamp(job.paid_at),
        "finished_at": stamp(job.finished_at),
        **download_link(job, links),
        # A customer whose card was declined pays again on the same session.
        **({"checkout_url": job.checkout_url} if job.status == JobStatus.AWAITING_PAYMENT else {}),
    }


def download_link(job: Job, links: DownloadLinks) -> dict[str, Any]:
    """A fresh signed link for a completed job, and when it stops working."""
    if job.status != JobStatus.COMPLETED or not job.result_key:
        return {}
    token, expires = links.issue(job.id)
    return {"download_url": links.url(token), "download_expires_at": expires.isoformat()}


def create_app(config: GatewayConfig) -> Starlette:
    """The gateway for ``config``; resources are made in the lifespan."""

    payments = Payments(config.stripe)
    links = DownloadLinks(config.download_secret, config.public_url, config.download_ttl_s)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_database_engine(config.database_url)
        if engine.dialect.name == "sqlite":
            await run_in_threadpool(migrate, engine)  # PostgreSQL: `smi-gateway migrate`
        sessions = session_factory(engine)
        app.state.services = Services(
            config, engine, sessions, payments, Storage(config.storage_url), links
        )
        background = None
        if config.background_in_process:
            background = Background.start(config, sessions, payments)
        try:
            yield
        finally:
            if background is not None:
                await run_in_threadpool(background.stop)
            engine.dispose()

    def services(request: Request) -> Services:
        return request.app.state.services

    async def checkout(request: Request) -> Response:
        svc = services(request)
        try:
            body = json.loads(await read_body(request, CHECKOUT_BODY_LIMIT))
        except json.JSONDecodeError as exc:
            raise RequestError("the body is not valid JSON") from exc
        image_url, return_url = parse_checkout_request(body, f"{config.public_url}/")
        started = await run_in_threadpool(
            start_checkout, config, svc.sessions, svc.payments, svc.storage, image_url, return_url
        )
        return JSONResponse(vars(started), status_code=201)

    def read_status(svc: Services, job_id: str, session_id: str | None) -> dict[str, Any]:
        try:
            if session_id:
                with svc.sessions() as session:
                    job = get_job(session, job_id)
                if job.stripe_session_id == session_id and job.status == "awaiting_payment":
                    # The customer came back before the webhook: ask Stripe ourselves.
                    checkout = svc.payments.retrieve_checkout_session(session_id)
                    with svc.sessions.begin() as session:
                        fulfil_checkout(session, checkout.to_dict(), "return")
            with svc.sessions() as session:
                return job_status(get_job(session, job_id), svc.links)
        except UnknownJobError as exc:
            raise NotFoundError("no such job") from exc

    async def status(request: Request) -> Response:
        body = await run_in_threadpool(
            read_status,
            services(request),
            request.path_params["job_id"],
            request.query_params.get("session_id"),
        )
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def stripe_webhook(request: Request) -> Response:
        payload = await read_body(request, WEBHOOK_BODY_LIMIT)
        event = verify_event(
            payload, request.headers.get("stripe-signature"), config.stripe.webhook_secret
        )
        result = await run_in_threadpool(apply_event, services(request).sessions, event)
        return JSONResponse({"received": True, "result": result})

    def open_download(svc: Services, token: str) -> tuple[Job, int]:
        job_id = svc.links.job_id(token)
        with svc.sessions() as session:
            try:
                job = get_job(session, job_id)
            except UnknownJobError as exc:
                raise DownloadForbiddenError("this download link is not valid") from exc
        if job.status != JobStatus.COMPLETED or not job.result_key:
            raise DownloadExpiredError("this download is no longer available")
        try:
            return job, svc.storage.size(job.result_key)
        except FileNotFoundError as exc:
            log.error("completed job has no stored result", extra={"job_id": job.id})
            raise DownloadExpiredError("this download is no longer available") from exc

    async def download(request: Request) -> Response:
        svc = services(request)
        job, size = await run_in_threadpool(open_download, svc, request.path_params["token"])
        assert job.result_key is not None
        suffix = job.result_key.rsplit(".", 1)[-1]
        return StreamingResponse(
            svc.storage.iter_chunks(job.result_key),
            media_type=DOWNLOAD_TYPES.get(suffix, "application/octet-stream"),
            headers={
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="{job.id}-4x.{suffix}"',
                "Cache-Control": "private, no-store",
            },
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(GatewayError("something went wrong on our side"))

    storefront = storefront_routes(config.public_url) if config.demo_storefront else []
    return Starlette(
        routes=[
            *storefront,
            Mount("/static", StaticFiles(packages=[("gateway", "static")]), name="static"),
            Route("/api/checkout", checkout, methods=["POST"]),
            Route("/api/jobs/{job_id}", status, methods=["GET"]),
            Route("/downloads/{token}", download, methods=["GET"]),
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            *admin_routes(config.admin_token, lambda r: services(r).sessions, payments),
        ],
        exception_handlers={GatewayError: gateway_error, Exception: unexpected_error},
        lifespan=lifespan,
        middleware=[
            # Storefront pages on other origins call the customer API from the browser.
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.storefront_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type"],
                max_age=600,
            )
        ],
    )
