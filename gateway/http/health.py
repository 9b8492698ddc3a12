"""``GET /healthz``: the process answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


ROUTES = [Route("/healthz", healthz, methods=["GET"])]
