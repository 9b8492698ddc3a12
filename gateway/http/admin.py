"""The admin API under ``/admin/``, behind ``Authorization: Bearer $SMI_ADMIN_TOKEN``.

    GET  /admin/jobs?status=&q=&limit=     list and search jobs (newest first)
    GET  /admin/jobs/{id}                  one job, its audit trail, refunds and outbox
    POST /admin/jobs/{id}/retry            publish a failed job again
    POST /admin/jobs/{id}/refund           {"reason"}: refund a job by hand
    GET  /admin/reports/revenue?format=json|csv&since=&until=
    GET  /admin/reconciliation             Stripe's sessions and refunds against our records

Without the token (or with no token configured) every route answers 401
before looking at anything, so nothing about jobs leaks. The token is
compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.errors import ConflictError, NotFoundError, RequestError, UnauthorizedError
from gateway.money.fulfilment import publish_job
from gateway.money.payments import Payments
from gateway.money.reconciliation import reconcile
from gateway.money.refunds import REFUNDABLE, start_refund
from gateway.money.reports import as_csv, as_json, revenue_by_day
from gateway.store.lifecycle import UnknownJobError, audit_trail, change_status, get_job
from gateway.store.tables import Job, OutboxMessage, Refund
from shared.jobs import JobStatus

RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.REFUND_FAILED})
RETRY_MESSAGE = "We are trying your image again."


def stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_record(job: Job) -> dict[str, Any]:
    """Everything an admin sees about a job."""
    return {
        "job_id": job.id,
        "status": job.status,
        "image_url": job.image_url,
        "width": job.width,
        "height": job.height,
        "amount_cents": job.amount_cents,
        "currency": job.currency,
        "customer_email": job.customer_email,
        "stripe_session_id": job.stripe_session_id,
        "stripe_payment_intent_id": job.stripe_payment_intent_id,
        "customer_message": job.customer_message,
        "decline_code": job.decline_code,
        "failure_reason": job.failure_reason,
        "progress": job.progress,
        "attempts": job.attempts,
        "created_at": stamp(job.created_at),
        "paid_at": stamp(job.paid_at),
        "finished_at": stamp(job.finished_at),
        "updated_at": stamp(job.updated_at),
    }


def list_jobs(session: Session, status: str | None, query: str | None, limit: int) -> list[Job]:
    statement = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status:
        statement = statement.where(Job.status == status)
    if query:
        pattern = f"%{query}%"
        statement = statement.where(
            or_(
                Job.id.like(pattern),
                Job.customer_email.ilike(pattern),
                Job.stripe_session_id.like(pattern),
                Job.stripe_payment_intent_id.like(pattern),
                Job.image_url.like(pattern),
            )
        )
    return list(session.scalars(statement))


def job_details(session: Session, job_id: str) -> dict[str, Any]:
    job = get_job(session, job_id)
    refunds = session.scalars(select(Refund).where(Refund.job_id == job_id).order_by(Refund.id))
    outbox = session.scalars(
        select(OutboxMessage).where(OutboxMessage.job_id == job_id).order_by(OutboxMessage.id)
    )
    return {
        "job": job_record(job),
        "audit": [
            {
                "at": stamp(entry.at),
                "from": entry.from_status,
                "to": entry.to_status,
                "reason": entry.reason,
                "source": entry.source,
            }
            for entry in audit_trail(session, job_id)
        ],
        "refunds": [
            {
                "idempotency_key": r.idempotency_key,
                "status": r.status,
                "stripe_refund_id": r.stripe_refund_id,
                "amount_cents": r.amount_cents,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "reason": r.reason,
            }
            for r in refunds
        ],
        "outbox": [
            {
                "kind": m.kind,
                "attempt": m.attempt,
                "published_at": stamp(m.published_at),
                "attempts": m.publish_attempts,
                "last_error": m.last_error,
            }
            for m in outbox
        ],
    }


def retry_job(session: Session, job_id: str, admin: str) -> Job:
    """Publish a failed job again (one more attempt); 409 unless it failed and is not refunded."""
    job = get_job(session, job_id, lock=True)
    if job.status not in RETRYABLE:
        raise ConflictError(f"only failed jobs can be retried; this one is {job.status}")
    change_status(
        session,
        job,
        JobStatus.PENDING,
        reason="retried by an admin",
        source=admin,
        customer_message=RETRY_MESSAGE,
    )
    job.failure_reason = None
    job.finished_at = None
    publish_job(session, job)
    return job


def refund_job(session: Session, job_id: str, reason: str, admin: str) -> Job:
    """Start a refund by hand; 409 unless the job is completed, failed or refund_failed."""
    job = get_job(session, job_id, lock=True)
    if job.status not in REFUNDABLE or not job.stripe_payment_intent_id:
        raise ConflictError(f"a {job.status} job cannot be refunded")
    start_refund(session, job, f"{reason} (by an admin)", admin)
    return job


def admin_routes(
    token: str | None,
    sessions_of: Callable[[Request], sessionmaker[Session]],
    payments: Payments,
) -> list[Route]:
    """The routes, each checking the bearer token first; ``sessions_of`` finds the database."""

    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not token or scheme.lower() != "bearer":
            raise UnauthorizedError("admin token required")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise UnauthorizedError("admin token required")

    def read(request: Request, work: Any) -> Any:
        try:
            with sessions_of(request)() as session:
                return work(session)
        except UnknownJobError as exc:
            raise NotFoundError("no such job") from exc

    def write(request: Request, work: Any) -> Any:
        try:
            with sessions_of(request).begin() as session:
                return work(session)
        except UnknownJobError as exc:
            raise NotFoundError("no such job") from exc

    async def jobs(request: Request) -> Response:
        authorize(request)
        params = request.query_params
        limit = _integer(params.get("limit", "100"), "limit", 1, 1000)

        def work(session: Session) -> list[dict[str, Any]]:
            return [
                job_record(job)
                for job in list_jobs(session, params.get("status"), params.get("q"), limit)
            ]

        return JSONResponse({"jobs": await run_in_threadpool(read, request, work)})

    async def job(request: Request) -> Response:
        authorize(request)
        job_id = request.path_params["job_id"]
        return JSONResponse(
            await run_in_threadpool(read, request, lambda s: job_details(s, job_id))
        )

    async def retry(request: Request) -> Response:
        authorize(request)
        job_id = request.path_params["job_id"]
        job = await run_in_threadpool(write, request, lambda s: retry_job(s, job_id, "admin"))
        return JSONResponse({"job": job_record(job)}, status_code=202)

    async def refund(request: Request) -> Response:
        authorize(request)
        job_id = request.path_params["job_id"]
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise RequestError("the body is not valid JSON") from exc
        reason = str((body or {}).get("reason") or "refunded by an admin")[:500]
        job = await run_in_threadpool(
            write, request, lambda s: refund_job(s, job_id, reason, "admin")
        )
        return JSONResponse({"job": job_record(job)}, status_code=202)

    async def revenue(request: Request) -> Response:
        authorize(request)
        params = request.query_params
        since, until = _date(params.get("since"), "since"), _date(params.get("until"), "until")
        rows = await run_in_threadpool(read, request, lambda s: revenue_by_day(s, since, until))
        if params.get("format", "json") == "csv":
            return PlainTextResponse(as_csv(rows), media_type="text/csv")
        return JSONResponse({"days": as_json(rows)})

    async def reconciliation(request: Request) -> Response:
        authorize(request)
        report = await run_in_threadpool(read, request, lambda s: reconcile(s, payments))
        return JSONResponse(report)

    return [
        Route("/admin/jobs", jobs, methods=["GET"]),
        Route("/admin/jobs/{job_id}", job, methods=["GET"]),
        Route("/admin/jobs/{job_id}/retry", retry, methods=["POST"]),
        Route("/admin/jobs/{job_id}/refund", refund, methods=["POST"]),
        Route("/admin/reports/revenue", revenue, methods=["GET"]),
        Route("/admin/reconciliation", reconciliation, methods=["GET"]),
    ]


def _integer(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise RequestError(f"{name} must be within {low}..{high}")
    return value


def _date(raw: str | None, name: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RequestError(f"{name} must be a date like 2026-11-26") from None
