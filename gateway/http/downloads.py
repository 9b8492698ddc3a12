"""``GET /downloads/{token}``: the result, for a valid signed link.

Where storage can presign (S3) and ``SMI_DOWNLOAD_REDIRECT=presigned`` (the
default), a ``GET`` is answered ``302`` to a short-lived address at the store
itself (``SMI_DOWNLOAD_PRESIGNED_TTL_S``) that saves under the job's file
name: a 100 MB result never passes through the gateway. Otherwise the bytes
are streamed, a chunk at a time (constant memory however large the result).

Either way a link answers as browsers and download managers expect:
``HEAD`` from the stored object's size and validators (nothing is read),
``Range`` for resuming (``206`` with ``Content-Range``; ``416`` for a range
past the end; one range per request, several are answered whole),
``If-Range``, ``ETag`` (the result's sha256) with ``If-None-Match`` (``304``)
and ``Content-Length``. A redirect carries the buyer's ``Range`` to the
store, which honours it. Neither the token nor the presigned address is
logged: the access log's path is redacted (``shared.logs``) and the address
goes only into the ``Location`` header.
"""

from __future__ import annotations

import logging
import re
from email.utils import formatdate, parsedate_to_datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.delivery.links import open_download
from gateway.http.openapi import Answer, Header, Operation, Param, described, errors
from gateway.http.requests import services_of

log = logging.getLogger(__name__)

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Unsatisfiable(Exception):
    """A range that starts past the end of the object."""


RESULT = {"type": "string", "format": "binary"}
SAVED_AS = Header('attachment; filename="JOB-MODEL-4x.png": the name to save it under')
VALIDATORS = {
    "ETag": Header("the result's sha256, quoted (the store's own on a redirect)"),
    "Accept-Ranges": Header("bytes"),
    "Content-Disposition": SAVED_AS,
    "Last-Modified": Header("when the result was stored"),
}


@described(
    Operation(
        "download",
        "The upscaled image, for a signed link (from the job's status or the email)",
        tags=("downloads",),
        description="On S3 storage a GET is answered 302 to a short-lived address at the store "
        "(SMI_DOWNLOAD_REDIRECT); otherwise the bytes are streamed. Range (one range), "
        "If-Range and If-None-Match work as browsers and download managers expect.",
        path={"token": "the signed token of the download link"},
        params=(
            Param("Range", "header", "bytes=START-END, bytes=START- or bytes=-LAST: one range"),
            Param("If-Range", "header", "the ETag or Last-Modified the range is of"),
            Param("If-None-Match", "header", "ETags held already (or *): 304 when one matches"),
        ),
        head=True,
        answers={
            200: Answer(
                "the whole result",
                RESULT,
                media_type="image/png",
                headers={**VALIDATORS, "Content-Length": Header("bytes", {"type": "integer"})},
                also={"image/jpeg": RESULT, "image/webp": RESULT},
            ),
            206: Answer(
                "the range asked for",
                RESULT,
                media_type="image/png",
                headers={
                    **VALIDATORS,
                    "Content-Range": Header("bytes START-END/SIZE", required=True),
                },
                also={"image/jpeg": RESULT, "image/webp": RESULT},
            ),
            302: Answer(
                "a short-lived address at the store (S3), which saves under the job's name",
                headers={"Location": Header("the presigned address", required=True)},
            ),
            304: Answer("not modified: If-None-Match named this result's ETag"),
            416: Answer(
                "the range starts past the end",
                headers={"Content-Range": Header("bytes */SIZE", required=True)},
            ),
        },
        errors={
            403: "forbidden: the token was changed or made up",
            409: "result_unavailable: the stored result is missing or not what its worker "
            "reported (the job's audit trail says which)",
            410: "link_expired: the link is past its lifetime, or the result was deleted",
            503: "storage_unavailable: storage does not answer; try again after Retry-After",
            **errors(404),
        },
    )
)
async def download(request: Request) -> Response:
    services = services_of(request)
    config, storage = services.config, services.storage
    found = await run_in_threadpool(
        open_download,
        services.sessions,
        storage,
        services.links,
        request.path_params["token"],
    )
    media_type = MEDIA_TYPES.get(found.suffix, "application/octet-stream")
    redirect = config.download_redirect == "presigned" and storage.can_presign
    # The store answers a redirected GET with its own ETag: HEAD and 304 say the same one.
    etag = (found.store_etag or found.etag) if redirect else found.etag
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": f'attachment; filename="{found.filename}"',
        "Cache-Control": "private, no-store",
    }
    if found.modified:
        headers["Last-Modified"] = formatdate(found.modified, usegmt=True)
    if _none_match(request.headers.get("if-none-match"), etag):
        kept = {k: v for k, v in headers.items() if k in ("ETag", "Cache-Control")}
        return Response(status_code=304, headers=kept)
    if redirect and request.method == "GET":
        location = await run_in_threadpool(
            storage.presigned_url,
            found.key,
            config.download_presigned_ttl_s,
            found.filename,
            media_type,
        )
        log.info("download redirected to storage", extra={"job_id": found.job_id})
        return Response(
            status_code=302,
            headers={
                "Location": location,
                "Cache-Control": "private, no-store",
                "Referrer-Policy": "no-referrer",
            },
        )
    start, end, status = 0, found.size, 200
    wanted = request.headers.get("range")
    if wanted and _if_range(request.headers.get("if-range"), etag, headers):
        try:
            chosen = _single_range(wanted, found.size)
        except Unsatisfiable:
            return Response(
                status_code=416,
                headers={"Content-Range": f"bytes */{found.size}", "ETag": etag},
            )
        if chosen is not None:
            start, end = chosen
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    if start == 0:
        log.info("download streamed", extra={"job_id": found.job_id})
    return StreamingResponse(
        storage.iter_chunks(found.key, start, end),
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def _none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weakly compared) or is ``*``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _if_range(header: str | None, etag: str, headers: dict[str, str]) -> bool:
    """Whether a ``Range`` applies: no ``If-Range``, or one naming this very version (an
    entity tag, compared strongly, or the exact ``Last-Modified`` date)."""
    if header is None:
        return True
    header = header.strip()
    if header.startswith(('"', "W/")):
        return header == etag
    modified = headers.get("Last-Modified")
    if modified is None:
        return False
    try:
        return parsedate_to_datetime(header) == parsedate_to_datetime(modified)
    except (TypeError, ValueError):
        return False


def _single_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a one-range ``Range`` header; ``None`` when the
    header is to be ignored (not bytes, malformed, several ranges); ``Unsatisfiable`` when
    the range starts past the end."""
    matched = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if matched is None:
        return None
    first, last = matched.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - length), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None  # last before first: malformed, ignored
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size)


ROUTES = [Route("/downloads/{token}", download, methods=["GET", "HEAD"])]
