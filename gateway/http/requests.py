"""What handlers share: the process's services, a bounded body, text a database can store,
blocking work off the loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import (
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    UnstorableTextError,
    UnsupportedMediaTypeError,
)
from gateway.http.errors import error_response
from gateway.services import Services
from gateway.store.lifecycle import UnknownJobError
from gateway.store.tables import UNSTORABLE

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
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, too many digits
        raise RequestError("the body is not valid JSON") from exc
    return storable(parsed, "the body")


def storable(value: T, where: str) -> T:
    """``value`` (text, or parsed JSON: keys and strings at any depth) if a database can
    store every string in it; else ``UnstorableTextError`` naming ``where``."""
    pending: list[Any] = [value]
    while pending:  # no recursion: JSON nested as deep as the parser allows is fine
        item = pending.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                raise UnstorableTextError(
                    f"{where} holds a character that cannot be stored (NUL or a lone surrogate)"
                )
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


class StorableText:
    """Pure ASGI middleware: a request whose path or query (as handlers read them,
    percent-decoded) holds text a database cannot store is answered 400 before any
    route sees it, whichever door it knocks on. JSON bodies: ``read_json``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                storable(scope["path"], "the path")
                query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                storable([text for pair in query for text in pair], "the query")
            except UnstorableTextError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
