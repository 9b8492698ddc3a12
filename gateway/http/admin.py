"""The admin API under ``/admin/``, behind ``Authorization: Bearer $SMI_ADMIN_TOKEN``.

    GET  /admin/jobs?status=&q=&limit=     list and search jobs (newest first)
    GET  /admin/jobs/{id}                  one job, its audit trail, refunds and outbox
    POST /admin/jobs/{id}/retry            publish a failed job again
    POST /admin/jobs/{id}/fulfil           a job awaiting payment: ask Stripe, fulfil if paid
    POST /admin/jobs/{id}/refund           {"reason"}: refund a job by hand
    GET  /admin/reports/revenue?format=json|csv&since=&until=
    GET  /admin/reconciliation             Stripe's sessions and refunds against our records
    GET  /admin/events?job=&outcome=&type=&limit=   received Stripe events and what each did
    GET  /admin/events/{id}                one event with its payload
    POST /admin/events/{id}/replay         apply a stored event again (idempotent)
    POST /admin/erase                      {"email"}: a customer's images and personal data
    GET  /admin/users                      the dashboard's accounts
    POST /admin/users                      {"email", "role"}: an account and its one-time password
    POST /admin/users/{email}/reset        a new one-time password; its sessions end
    DELETE /admin/users/{email}            the account and its sessions

Every handler is wrapped in ``admin_only``: without the token (or with no
token configured) it answers 401 before looking at anything, so nothing
about jobs leaks. The token is compared in constant time.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.background.retention import erase_customer
from gateway.errors import ConflictError, NotFoundError, RequestError, UnauthorizedError
from gateway.http.openapi import (
    ADMIN,
    DAY_OR_EMPTY,
    EMAIL,
    Answer,
    Body,
    Link,
    Operation,
    Param,
    described,
    errors,
    obj,
    string,
)
from gateway.http.requests import email_in, in_session, off_loop, read_json, services_of
from gateway.http.schemas import (
    ADMIN_JOB,
    ERASURE,
    EVENT,
    EVENT_WITH_PAYLOAD,
    JOB_DETAILS,
    JOB_DONE,
    RECONCILIATION,
    REVENUE_DAY,
    USER,
    USER_AND_PASSWORD,
)
from gateway.money.fulfilment import retry_job, settle_from_stripe
from gateway.money.pricing import margin_of
from gateway.money.reconciliation import reconcile
from gateway.money.refunds import refund_job
from gateway.money.reports import as_csv, as_json, revenue_by_day
from gateway.money.stripe_events import replay_event
from gateway.store import accounts
from gateway.store.accounts import AccountConflictError, AccountError, UnknownAccountError
from gateway.store.lifecycle import get_job
from gateway.store.queries import (
    event_record,
    job_details,
    job_record,
    list_events,
    list_jobs,
    stamp,
)
from gateway.store.tables import EventOutcome, SellerRole, WebhookEvent
from shared.jobs import JobStatus

BODY_LIMIT = 16 * 1024
Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")

# A filter's empty value is no filter (smi-admin sends one for each it was not given).
ANY = ""
USER_LINKS = {
    "Reset": Link("resetUser", {"email": "$response.body#/user/email"}),
    "Remove": Link("removeUser", {"email": "$response.body#/user/email"}),
}
JOB_ID = "the job's id"
EVENT_ID = "Stripe's event id (evt_...)"
ACCOUNT = "the account's email address"
LIMIT = Param(
    "limit", "query", "at most this many (100)", {"type": "integer", "minimum": 1, "maximum": 1000}
)
DAY = DAY_OR_EMPTY
UNAUTHORIZED = {401: "unauthorized: Authorization: Bearer $SMI_ADMIN_TOKEN is missing or wrong"}
NO_JOB = {404: "not_found: no such job"}
STRIPE_TROUBLE = {
    502: errors(502)[502],
    503: "payment_provider_unavailable (Stripe), the broker or the database; try again after "
    "Retry-After",
}


def admin(operation_id: str, summary: str, **more: Any) -> Operation:
    """An operation of the admin API: the admin token, and 401 without it."""
    return Operation(
        operation_id,
        summary,
        tags=("admin",),
        security=ADMIN,
        errors={**UNAUTHORIZED, **more.pop("errors", {})},
        **more,
    )


def admin_only(handler: Handler) -> Handler:
    """Answer 401 unless the request carries the configured admin token."""

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        token = services_of(request).config.admin_token
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not token or scheme.lower() != "bearer":
            raise UnauthorizedError("admin token required")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise UnauthorizedError("admin token required")
        return await handler(request)

    return checked


@described(
    admin(
        "listJobs",
        "Jobs, newest first: by status, or matching part of an id, email, Stripe id or URL",
        params=(
            Param(
                "status",
                "query",
                "only jobs in this status",
                {"type": "string", "enum": [*JobStatus, ANY]},
            ),
            Param("q", "query", "part of a job id, email, Stripe session or intent id, or URL"),
            LIMIT,
        ),
        answers={
            200: Answer("the jobs", obj(("jobs",), jobs={"type": "array", "items": ADMIN_JOB}))
        },
        errors=errors(400),
    )
)
@admin_only
async def jobs(request: Request) -> Response:
    params = request.query_params
    limit = _integer(params.get("limit", "100"), "limit", 1, 1000)
    status = _choice(params.get("status"), "status", list(JobStatus))
    pricing = services_of(request).config.pricing

    def work(session: Session) -> list[dict[str, Any]]:
        found = list_jobs(session, status, params.get("q"), limit)
        return [{**job_record(job), **margin_of(job, pricing)} for job in found]

    return JSONResponse({"jobs": await in_session(request, work)})


@described(
    admin(
        "getAdminJob",
        "One job in full: payment, audit trail, refunds, disputes, events, emails, outbox",
        path={"job_id": JOB_ID},
        answers={200: Answer("the job and its records", JOB_DETAILS)},
        errors=NO_JOB,
    )
)
@admin_only
async def job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    pricing = services_of(request).config.pricing

    def work(session: Session) -> dict[str, Any]:
        details = job_details(session, job_id)
        details["job"].update(margin_of(get_job(session, job_id), pricing))
        return details

    return JSONResponse(await in_session(request, work))


@described(
    admin(
        "retryJob",
        "Publish a failed job again",
        path={"job_id": JOB_ID},
        answers={202: Answer("queued again", JOB_DONE)},
        errors={**NO_JOB, **errors(409, 503)},
    )
)
@admin_only
async def retry(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    done = await in_session(request, lambda s: retry_job(s, job_id, "admin"), write=True)
    return JSONResponse({"job": job_record(done)}, status_code=202)


@described(
    admin(
        "fulfilJob",
        "A job still awaiting payment: ask Stripe, and fulfil it if it is paid",
        path={"job_id": JOB_ID},
        answers={202: Answer("fulfilled (or refunded, if the payment cannot be used)", JOB_DONE)},
        errors={
            **NO_JOB,
            409: "conflict: not awaiting payment, or Stripe says it is not paid",
            **STRIPE_TROUBLE,
        },
    )
)
@admin_only
async def fulfil(request: Request) -> Response:
    services = services_of(request)
    job_id = request.path_params["job_id"]
    done = await off_loop(lambda: settle_from_stripe(services.sessions, services.payments, job_id))
    return JSONResponse({"job": job_record(done)}, status_code=202)


@described(
    admin(
        "refundJob",
        "Refund a job by hand",
        path={"job_id": JOB_ID},
        body=Body(
            "why (kept in the audit trail); an empty body says 'refunded by an admin'",
            obj(reason={"type": "string", "maxLength": 500}),
            required=False,
        ),
        answers={202: Answer("refunding", JOB_DONE)},
        errors={**NO_JOB, **errors(400, 409, 413, 415), **STRIPE_TROUBLE},
    )
)
@admin_only
async def refund(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    body = await read_json(request, BODY_LIMIT, empty={})
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    reason = str(body.get("reason") or "refunded by an admin")[:500]
    done = await in_session(request, lambda s: refund_job(s, job_id, reason, "admin"), write=True)
    return JSONResponse({"job": job_record(done)}, status_code=202)


@described(
    admin(
        "eraseCustomer",
        "Erase a customer's images, email address and page addresses from every finished job",
        body=Body(
            "the customer's address",
            obj(("email",), email=EMAIL),
        ),
        answers={200: Answer("what was erased, and what is kept", ERASURE)},
        errors=errors(400, 413, 415),
    )
)
@admin_only
async def erase(request: Request) -> Response:
    email = email_in(await read_json(request, BODY_LIMIT))
    storage = services_of(request).storage
    done = await in_session(request, lambda s: erase_customer(s, storage, email), write=True)
    return JSONResponse(vars(done))


@described(
    admin(
        "revenueReport",
        "Revenue per day (UTC) and currency: gross, refunded, lost to disputes, net, tax",
        params=(
            Param(
                "format",
                "query",
                "json (default) or csv",
                {"type": "string", "enum": ["json", "csv"]},
            ),
            Param("since", "query", "from this day on", DAY),
            Param("until", "query", "up to this day", DAY),
        ),
        answers={
            200: Answer(
                "the days, oldest first",
                obj(("days",), days={"type": "array", "items": REVENUE_DAY}),
                also={"text/csv": {"type": "string"}},
            )
        },
        errors=errors(400),
    )
)
@admin_only
async def revenue(request: Request) -> Response:
    params = request.query_params
    since, until = _date(params.get("since"), "since"), _date(params.get("until"), "until")
    kind = params.get("format", "json")
    if kind not in ("json", "csv"):
        raise RequestError("format must be json or csv")
    rows = await in_session(request, lambda s: revenue_by_day(s, since, until))
    if kind == "csv":
        return PlainTextResponse(as_csv(rows), media_type="text/csv")
    return JSONResponse({"days": as_json(rows)})


@described(
    admin(
        "reconcile",
        "Stripe's Checkout Sessions and refunds against our records",
        answers={200: Answer("what does not match", RECONCILIATION)},
        errors=STRIPE_TROUBLE,
    )
)
@admin_only
async def reconciliation(request: Request) -> Response:
    payments = services_of(request).payments
    return JSONResponse(await in_session(request, lambda s: reconcile(s, payments)))


@described(
    admin(
        "listEvents",
        "Stripe events received, newest first, and what each did",
        params=(
            Param("job", "query", "of this job"),
            Param(
                "outcome",
                "query",
                "with this outcome",
                {"type": "string", "enum": [*EventOutcome, ANY]},
            ),
            Param("type", "query", "of this Stripe type"),
            LIMIT,
        ),
        answers={
            200: Answer("the events", obj(("events",), events={"type": "array", "items": EVENT}))
        },
        errors=errors(400),
    )
)
@admin_only
async def events(request: Request) -> Response:
    params = request.query_params
    limit = _integer(params.get("limit", "100"), "limit", 1, 1000)
    outcome = _choice(params.get("outcome"), "outcome", list(EventOutcome))
    found = await in_session(
        request,
        lambda s: list_events(
            s,
            params.get("job") or None,
            outcome,
            params.get("type") or None,
            limit,
        ),
    )
    return JSONResponse({"events": found})


@described(
    admin(
        "getEvent",
        "One Stripe event received, with its payload",
        path={"event_id": EVENT_ID},
        answers={200: Answer("the event", obj(("event",), event=EVENT_WITH_PAYLOAD))},
        errors={404: "not_found: no such event"},
    )
)
@admin_only
async def event(request: Request) -> Response:
    event_id = request.path_params["event_id"]

    def work(session: Session) -> dict[str, Any]:
        found = session.get(WebhookEvent, event_id)
        if found is None:
            raise NotFoundError("no such event")
        return event_record(found, payload=True)

    return JSONResponse({"event": await in_session(request, work)})


@described(
    admin(
        "replayEvent",
        "Apply a stored Stripe event again (it takes effect once, whatever happens)",
        path={"event_id": EVENT_ID},
        answers={
            200: Answer(
                "what it did this time, and the event",
                obj(
                    ("outcome", "event"),
                    outcome=string("", enum=list(EventOutcome)),
                    event=EVENT,
                ),
            )
        },
        errors={
            404: "not_found: no such event (or it was received before payloads were kept)",
            **STRIPE_TROUBLE,
        },
    )
)
@admin_only
async def replay(request: Request) -> Response:
    services = services_of(request)
    event_id = request.path_params["event_id"]

    def work() -> dict[str, Any]:
        try:
            outcome = replay_event(services.sessions, event_id, services.payments)
        except LookupError:
            raise NotFoundError(
                "no such event (or it was received before payloads were kept)"
            ) from None
        with services.sessions() as session:
            return {
                "outcome": outcome,
                "event": event_record(session.get_one(WebhookEvent, event_id)),
            }

    return JSONResponse(await off_loop(work))


def _user(account: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": account["email"],
        "role": account["role"],
        "password_is_temporary": account["password_is_temporary"],
        "created_at": stamp(account["created_at"]),
        "last_sign_in_at": stamp(account["last_sign_in_at"]),
        "sessions": account["sessions"],
    }


async def _on_accounts(request: Request, work: Callable[[Session], T]) -> T:
    """``work`` in a transaction; an account error as the answer it deserves."""
    try:
        return await in_session(request, work, write=True)
    except UnknownAccountError as exc:
        raise NotFoundError(str(exc)) from None
    except AccountConflictError as exc:
        raise ConflictError(str(exc)) from None
    except AccountError as exc:
        raise RequestError(str(exc)) from None


def _one(session: Session, email: str) -> dict[str, Any]:
    wanted = accounts.normal_email(email)
    return _user(next(a for a in accounts.list_accounts(session) if a["email"] == wanted))


@described(
    admin(
        "listUsers",
        "The seller dashboard's accounts",
        answers={
            200: Answer("the accounts", obj(("users",), users={"type": "array", "items": USER}))
        },
    )
)
@admin_only
async def users(request: Request) -> Response:
    found = await in_session(request, accounts.list_accounts)
    return JSONResponse({"users": [_user(account) for account in found]})


@described(
    admin(
        "addUser",
        "A dashboard account, and its one-time password",
        body=Body(
            "the account",
            obj(
                ("email", "role"),
                email=EMAIL,
                role={"type": "string", "enum": list(SellerRole)},
            ),
        ),
        answers={201: Answer("made", USER_AND_PASSWORD, links=USER_LINKS)},
        errors={**errors(400, 413, 415), 409: "conflict: the address has an account already"},
    )
)
@admin_only
async def add_user(request: Request) -> Response:
    body = await read_json(request, BODY_LIMIT)
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    email, role = str(body.get("email") or ""), str(body.get("role") or "")

    def work(session: Session) -> dict[str, Any]:
        _, password = accounts.add_account(session, email, role)
        return {"user": _one(session, email), "password": password}

    return JSONResponse(await _on_accounts(request, work), status_code=201)


@described(
    admin(
        "resetUser",
        "A new one-time password for an account; its sessions end",
        path={"email": ACCOUNT},
        answers={200: Answer("reset", USER_AND_PASSWORD, links=USER_LINKS)},
        errors={404: "not_found: no such account"},
    )
)
@admin_only
async def reset_user(request: Request) -> Response:
    email = request.path_params["email"]

    def work(session: Session) -> dict[str, Any]:
        password = accounts.reset_password(session, email)
        return {"user": _one(session, email), "password": password}

    return JSONResponse(await _on_accounts(request, work))


@described(
    admin(
        "removeUser",
        "Remove an account and its sessions (never the last owner)",
        path={"email": ACCOUNT},
        answers={200: Answer("removed", obj(("removed",), removed=string("the address")))},
        errors={404: "not_found: no such account", 409: "conflict: the last owner stays"},
    )
)
@admin_only
async def remove_user(request: Request) -> Response:
    email = request.path_params["email"]
    await _on_accounts(request, lambda s: accounts.remove_account(s, email))
    return JSONResponse({"removed": accounts.normal_email(email)})


ROUTES = [
    Route("/admin/jobs", jobs, methods=["GET"]),
    Route("/admin/jobs/{job_id}", job, methods=["GET"]),
    Route("/admin/jobs/{job_id}/retry", retry, methods=["POST"]),
    Route("/admin/jobs/{job_id}/fulfil", fulfil, methods=["POST"]),
    Route("/admin/jobs/{job_id}/refund", refund, methods=["POST"]),
    Route("/admin/reports/revenue", revenue, methods=["GET"]),
    Route("/admin/reconciliation", reconciliation, methods=["GET"]),
    Route("/admin/erase", erase, methods=["POST"]),
    Route("/admin/events", events, methods=["GET"]),
    Route("/admin/events/{event_id}", event, methods=["GET"]),
    Route("/admin/events/{event_id}/replay", replay, methods=["POST"]),
    Route("/admin/users", users, methods=["GET"]),
    Route("/admin/users", add_user, methods=["POST"]),
    Route("/admin/users/{email}/reset", reset_user, methods=["POST"]),
    Route("/admin/users/{email}", remove_user, methods=["DELETE"]),
]


def _integer(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise RequestError(f"{name} must be within {low}..{high}")
    return value


def _choice(raw: str | None, name: str, allowed: list[str]) -> str | None:
    """``raw`` if it is one of ``allowed``; ``None`` for none (or empty); else 400."""
    if not raw:
        return None
    if raw not in allowed:
        raise RequestError(f"{name} must be one of {', '.join(allowed)}")
    return raw


def _date(raw: str | None, name: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RequestError(f"{name} must be a date like 2026-11-26") from None
