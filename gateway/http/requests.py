"""What handlers share: the process's services, a bounded body, blocking work off the loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from gateway.errors import (
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
)
from gateway.services import Services
from gateway.store.lifecycle import UnknownJobError

T = TypeVar("T")


def services_of(request: Request) -> Services:
    """The services of the app that is answering ``request``."""
    services: Services = request.app.state.services
    return services


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


async def read_json(request: Request, limit: int, *, empty: Any = None) -> Any:
    """The body parsed as JSON (``empty`` when there is none); ``RequestError`` if it is not.

    A body must say ``Content-Type: application/json``: a browser sends that
    from another site only after a CORS preflight, which refuses origins
    we do not serve (a form or ``text/plain`` post needs none).
    """
    body = await read_body(request, limit)
    if not body.strip() and empty is not None:
        return empty
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError("send the body as JSON with Content-Type: application/json")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, too many digits
        raise RequestError("the body is not valid JSON") from exc


def email_in(body: Any) -> str:
    """The ``email`` of a JSON body, if it looks like an address; else ``RequestError``."""
    address = body.get("email") if isinstance(body, dict) else None
    if (
        not isinstance(address, str)
        or not 3 <= len(address) <= 320
        or "@" not in address
        or not address.isprintable()
    ):
        raise RequestError("email must be an email address")
    return address


async def off_loop(work: Callable[[], T]) -> T:
    """``work`` in a worker thread, off the event loop; a job id that matches no job is a 404."""

    def run() -> T:
        try:
            return work()
        except UnknownJobError as exc:
            raise NotFoundError("no such job") from exc

    return await run_in_threadpool(run)


async def in_session(request: Request, work: Callable[[Session], T], *, write: bool = False) -> T:
    """``work`` in a database session (a transaction when ``write``), via ``off_loop``."""
    sessions = services_of(request).sessions

    def run() -> T:
        with sessions.begin() if write else sessions() as session:
            return work(session)

    return await off_loop(run)
