"""Free previews, for the buyer's page before paying.

POST /api/previews                  {"image_url", "model"?, "x"?, "y"?} -> 202 (or 200 when
                                    an identical preview is ready) {"preview_id", "status",
                                    "crop", "scale", "wait_s"}; 429 with Retry-After past
                                    the SMI_PREVIEW_* limits
GET  /api/previews/{id}             the same status, 202 while pending
GET  /api/previews/{id}/before.png  bicubic, at the model's scale
GET  /api/previews/{id}/after.png   the model
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.errors import NotFoundError, RequestError
from gateway.http.customer import BODY_LIMIT, checkout_limiter
from gateway.http.limits import client_of
from gateway.http.requests import off_loop, read_json, services_of
from gateway.images.previews import preview_image_key, preview_status, start_preview


async def create(request: Request) -> Response:
    services = services_of(request)
    limits, client = request.app.state.preview_limits, client_of(request)
    await limits.take_client(client)
    body = await read_json(request, BODY_LIMIT)
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    image_url, model = body.get("image_url"), body.get("model")
    if not isinstance(image_url, str) or not image_url.strip():
        raise RequestError("image_url is required")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string")
    at = _point(body)
    # Only a valid request takes from everyone's share (given back if its image is unusable).
    # Fetching the image is a checkout's kind of work: the same limited threads.
    async with limits.everyones_share(client):
        status = await anyio.to_thread.run_sync(
            lambda: start_preview(
                services.config, services.storage, services.broker, image_url.strip(), model, at
            ),
            limiter=checkout_limiter(request),
        )
    return _answer(status)


async def show(request: Request) -> Response:
    storage = services_of(request).storage
    preview_id = request.path_params["preview_id"]
    return _answer(await off_loop(lambda: preview_status(storage, preview_id)))


async def image(request: Request) -> Response:
    storage = services_of(request).storage
    key = preview_image_key(request.path_params["preview_id"], request.path_params["which"])
    if not await off_loop(lambda: storage.exists(key)):
        raise NotFoundError("this preview image is not ready")
    return StreamingResponse(
        storage.iter_chunks(key),
        media_type="image/png",
        headers={"Cache-Control": "public, max-age=3600"},  # the id names its content
    )


def _point(body: dict[str, Any]) -> tuple[int, int] | None:
    x, y = body.get("x"), body.get("y")
    if x is None and y is None:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 20 for v in (x, y)):
        raise RequestError("x and y must be whole numbers of pixels from the top left")
    return int(x), int(y)  # type: ignore[arg-type]


def _answer(status: dict[str, Any]) -> Response:
    code = 202 if status["status"] == "pending" else 200
    return JSONResponse(status, status_code=code, headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/api/previews", create, methods=["POST"]),
    Route("/api/previews/{preview_id}", show, methods=["GET"]),
    Route("/api/previews/{preview_id}/{which}.png", image, methods=["GET"]),
]
