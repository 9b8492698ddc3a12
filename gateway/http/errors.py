"""Domain errors as HTTP answers: the one place a ``GatewayError`` gets a status.

Every error body is ``{"error": {"type", "message"}}``; nothing else answers
with a trace. An error type not listed here inherits its nearest listed
ancestor's answer; a ``GatewayError`` nobody listed is a 500. A
``BrokerError`` from any door (a publish the broker refused even on a new
connection) is 503 ``broker_unavailable`` with ``Retry-After``: our outage,
not the client's mistake, and worth asking again.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.errors import (
    ConflictError,
    CrossSiteRequestError,
    DownloadExpiredError,
    DownloadForbiddenError,
    EventTooEarlyError,
    GatewayError,
    NotFoundError,
    NotPermittedError,
    PayloadTooLargeError,
    PaymentProviderRejected,
    PaymentProviderUnavailable,
    RateLimitedError,
    RequestError,
    ResultUnavailableError,
    SourceImageError,
    StorageFullError,
    StorageUnavailableError,
    UnauthorizedError,
    UnstorableTextError,
    UnsupportedMediaTypeError,
    WebhookSignatureError,
)
from shared.broker import BrokerError

log = logging.getLogger(__name__)

BROKER_RETRY_AFTER_S = 5

# status, type
ANSWERS: dict[type[GatewayError], tuple[int, str]] = {
    GatewayError: (500, "internal_error"),
    RequestError: (400, "invalid_request"),
    PayloadTooLargeError: (413, "payload_too_large"),
    UnsupportedMediaTypeError: (415, "unsupported_media_type"),
    UnstorableTextError: (400, "invalid_characters"),
    SourceImageError: (422, "unusable_image"),
    NotFoundError: (404, "not_found"),
    RateLimitedError: (429, "rate_limited"),
    ConflictError: (409, "conflict"),
    ResultUnavailableError: (409, "result_unavailable"),
    UnauthorizedError: (401, "unauthorized"),
    DownloadForbiddenError: (403, "forbidden"),
    NotPermittedError: (403, "not_permitted"),
    CrossSiteRequestError: (403, "cross_site_request"),
    DownloadExpiredError: (410, "link_expired"),
    WebhookSignatureError: (400, "invalid_signature"),
    PaymentProviderUnavailable: (503, "payment_provider_unavailable"),
    EventTooEarlyError: (503, "event_too_early"),
    StorageFullError: (503, "storage_full"),
    StorageUnavailableError: (503, "storage_unavailable"),
    PaymentProviderRejected: (502, "payment_provider_rejected"),
}


def answer_for(error: GatewayError) -> tuple[int, str]:
    """The status and type of ``error``: its own class's, or its nearest ancestor's."""
    for cls in type(error).__mro__:
        if cls in ANSWERS:
            return ANSWERS[cls]
    return ANSWERS[GatewayError]


def error_response(error: GatewayError) -> JSONResponse:
    status, kind = answer_for(error)
    headers = {}
    if isinstance(
        error,
        PaymentProviderUnavailable
        | RateLimitedError
        | EventTooEarlyError
        | StorageFullError
        | StorageUnavailableError,
    ):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = f'Bearer realm="{error.realm}"'
    return JSONResponse(
        {"error": {"type": kind, "message": str(error)}}, status_code=status, headers=headers
    )


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def broker_unavailable(request: Request, exc: Exception) -> Response:
    """The broker is away: 503, try again shortly (its address and error go to the log only)."""
    log.warning("broker unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {
            "error": {
                "type": "broker_unavailable",
                "message": "this is unavailable for a moment on our side; please try again",
            }
        },
        status_code=503,
        headers={"Retry-After": str(BROKER_RETRY_AFTER_S)},
    )


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database does not answer (a lost connection, a server away): 503, try again
    shortly, never a 500; its address and error go to the log only."""
    log.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return JSONResponse(
        {
            "error": {
                "type": "database_unavailable",
                "message": "this is unavailable for a moment on our side; please try again",
            }
        },
        status_code=503,
        headers={"Retry-After": str(BROKER_RETRY_AFTER_S)},
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(GatewayError("something went wrong on our side"))


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such route, method not allowed) in our error shape; a 405
    names in ``Allow`` every method the path takes (Starlette names only its first route's,
    where a path has a route per method, and none for static files)."""
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
    return JSONResponse(
        {"error": {"type": kinds.get(exc.status_code, "http_error"), "message": exc.detail}},
        status_code=exc.status_code,
        headers=headers,
    )


def allowed_methods(request: Request) -> set[str]:
    """Every method some route of the app takes on the request's path."""
    allowed: set[str] = set()
    for route in getattr(request.app, "routes", ()):
        if isinstance(route, Route) and route.methods:
            methods = route.methods
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            methods = {"GET", "HEAD"}
        else:
            continue
        if route.matches(request.scope)[0] != Match.NONE:
            allowed |= methods
    return allowed


HANDLERS = {
    GatewayError: gateway_error,
    BrokerError: broker_unavailable,
    # Connection-level database errors only (a constraint or a data error is a defect).
    OperationalError: database_unavailable,
    InterfaceError: database_unavailable,
    HTTPException: http_error,
    Exception: unexpected_error,
}
