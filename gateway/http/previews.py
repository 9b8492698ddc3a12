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
from gateway.http.openapi import (
    NO_STORE_HEADER,
    Answer,
    Body,
    Header,
    Link,
    Operation,
    described,
    errors,
    obj,
    string,
)
from gateway.http.requests import off_loop, read_json, services_of
from gateway.http.schemas import CHOSEN_MODEL, PREVIEW
from gateway.images.previews import preview_image_key, preview_status, start_preview

PIXELS = {"type": "integer", "minimum": 0, "maximum": (1 << 20) - 1}
PREVIEW_ID = {
    "type": "string",
    "description": "the preview's id, from POST /api/previews",
    "pattern": "^[0-9a-f]{32}$",
}
IMAGE_LINKS = {
    which.capitalize(): Link(
        "getPreviewImage",
        {"preview_id": "$response.body#/preview_id", "which": which},
        f"the {which} image",
    )
    for which in ("before", "after")
}
PREVIEW_ANSWERS = {
    200: Answer(
        "ready or failed",
        PREVIEW,
        headers={"Cache-Control": NO_STORE_HEADER},
        links={
            **IMAGE_LINKS,
            "Status": Link("getPreview", {"preview_id": "$response.body#/preview_id"}),
        },
    ),
    202: Answer(
        "pending: ask GET /api/previews/{preview_id} again shortly",
        PREVIEW,
        headers={"Cache-Control": NO_STORE_HEADER},
        links={"Status": Link("getPreview", {"preview_id": "$response.body#/preview_id"})},
    ),
}


@described(
    Operation(
        "createPreview",
        "Ask for a free preview: a square of the image, upscaled, beside a simple enlargement",
        tags=("previews",),
        description="Identical requests (image, model, square) share one preview. Limited "
        "per client and for everyone (SMI_PREVIEW_*), and in squares per image.",
        body=Body(
            "the image and, optionally, the model and the square's top left corner",
            {
                **obj(
                    ("image_url",),
                    image_url=string("the image, on one of the shop's hosts", minLength=1),
                    model=CHOSEN_MODEL,
                    x=PIXELS,
                    y=PIXELS,
                ),
                # The square's corner: x and y together, or neither (the most detailed).
                "dependentRequired": {"x": ["y"], "y": ["x"]},
            },
        ),
        answers=PREVIEW_ANSWERS,
        errors={
            **errors(400, 413, 415, 422, 429),
            503: "storage_full, or the broker or the database; try again after Retry-After",
        },
    )
)
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


@described(
    Operation(
        "getPreview",
        "A preview's status",
        tags=("previews",),
        path={"preview_id": PREVIEW_ID},
        answers=PREVIEW_ANSWERS,
        errors={404: "not_found: no such preview (previews are kept for a while only)"},
    )
)
async def show(request: Request) -> Response:
    storage = services_of(request).storage
    preview_id = request.path_params["preview_id"]
    return _answer(await off_loop(lambda: preview_status(storage, preview_id)))


@described(
    Operation(
        "getPreviewImage",
        "A preview's image: before (a simple enlargement) or after (the model)",
        tags=("previews",),
        path={"preview_id": PREVIEW_ID, "which": {"type": "string", "enum": ["before", "after"]}},
        answers={
            200: Answer(
                "the PNG, at the model's scale",
                {"type": "string", "format": "binary"},
                media_type="image/png",
                headers={"Cache-Control": Header("public: the id names its content")},
            )
        },
        errors={404: "not_found: no such preview image, or not ready yet"},
    )
)
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
    """The square's top left corner: ``x`` and ``y`` together, or neither."""
    if "x" not in body and "y" not in body:
        return None
    x, y = _pixels(body.get("x")), _pixels(body.get("y"))
    if x is None or y is None:
        raise RequestError("x and y must be whole numbers of pixels from the top left")
    return x, y


def _pixels(value: Any) -> int | None:
    """A pixel coordinate: a whole number (JSON's 12.0 is one too) within 0..2**20-1."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 20:
        return value
    return None


def _answer(status: dict[str, Any]) -> Response:
    code = 202 if status["status"] == "pending" else 200
    return JSONResponse(status, status_code=code, headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/api/previews", create, methods=["POST"]),
    Route("/api/previews/{preview_id}", show, methods=["GET"]),
    Route("/api/previews/{preview_id}/{which}.png", image, methods=["GET"]),
]
