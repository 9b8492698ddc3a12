"""``GET /downloads/{token}``: the result, streamed, for a valid signed link."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.delivery.links import open_download
from gateway.http.requests import services_of

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


async def download(request: Request) -> Response:
    services = services_of(request)
    found = await run_in_threadpool(
        open_download,
        services.sessions,
        services.storage,
        services.links,
        request.path_params["token"],
    )
    return StreamingResponse(
        services.storage.iter_chunks(found.key),
        media_type=MEDIA_TYPES.get(found.suffix, "application/octet-stream"),
        headers={
            "Content-Length": str(found.size),
            "Content-Disposition": f'attachment; filename="{found.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


ROUTES = [Route("/downloads/{token}", download, methods=["GET"])]
