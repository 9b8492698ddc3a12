"""The seller's dashboard: pages to read the shop by (``gateway/http/dashboard_actions.py``
changes it, ``seller_auth.py`` lets people in).

    GET /dashboard/                          overview: 30 days in figures, what needs a person
    GET /dashboard/orders?q=&status=&model=&since=&until=&older=   search, 50 a page
    GET /dashboard/orders/{id}               one order: timeline, images, money, emails, events
    GET /dashboard/orders/{id}/source.jpg    its thumbnails (result.jpg)
    GET /dashboard/fleet                     queues, workers, previews (what /metrics measures)
    GET /dashboard/events?job=&outcome=&type=   Stripe events received; /events/{id}: one
    GET /dashboard/reports?since=&until=     revenue by day (reports.csv: the same as CSV)
    GET /dashboard/reconciliation            the last check (POST runs one: an action)
    GET /dashboard/settings                  read-only: mode, offers, origins, mail, live gaps

Every handler reads through the same functions as the admin API (``gateway.store.queries``,
``gateway.money.reports``) and stands behind ``@signed_in``.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.dashboard.charts import bar_chart, line_chart
from gateway.dashboard.fleet import read_fleet
from gateway.dashboard.overview import read_overview
from gateway.dashboard.settings import read_settings
from gateway.dashboard.thumbnails import Thumbnails
from gateway.errors import NotFoundError, RequestError
from gateway.http.dashboard_view import helpers, language_of, page
from gateway.http.openapi import DAY_OR_EMPTY, Answer, Operation, Param, described
from gateway.http.requests import in_session, off_loop, services_of
from gateway.http.seller_auth import dashboard_page, signed_in
from gateway.money.pricing import margin_of
from gateway.money.reports import as_csv, revenue_by_day
from gateway.store.lifecycle import get_job
from gateway.store.orders import OrderQuery, evidence_deadlines, left_to_refund, search_orders
from gateway.store.queries import event_record, job_details, list_events
from gateway.store.tables import ReconciliationCheck, WebhookEvent
from shared.jobs import JobStatus
from shared.models import MODELS

REFUNDABLE = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.REFUND_FAILED)
RETRYABLE = (JobStatus.FAILED, JobStatus.REFUND_FAILED)
SETTLEABLE = (JobStatus.AWAITING_PAYMENT, JobStatus.EXPIRED)
JOB_ID = "the order's job id"
DAY = DAY_OR_EMPTY
OUTCOMES = ("applied", "no change", "ignored", "unknown job", "error")


@described(
    Operation(
        "dashboardHome",
        "The dashboard's home, with its slash",
        tags=("dashboard",),
        answers={308: Answer("to /dashboard/")},
    )
)
async def to_home(request: Request) -> Response:
    return RedirectResponse("/dashboard/", status_code=308)


@described(
    dashboard_page(
        "overview",
        "30 days in figures, and what needs a person now",
        params=(Param("done", "query", "what was just done, to say so"),),
    )
)
@signed_in()
async def overview(request: Request) -> Response:
    config = services_of(request).config
    found = await in_session(request, lambda s: read_overview(s, config))
    show = helpers(language_of(request))
    t = show["t"]
    labels = [show["day"](day.day) for day in found.days]
    currency = found.currency

    def amount(value: float) -> str:
        return str(show["money"](int(value), currency))

    charts = {
        "sales": bar_chart(
            labels,
            [d.totals.sales for d in found.days],
            title=t("overview.sales_per_day"),
            show=lambda v: show["number"](v),
        ),
        "revenue": bar_chart(
            labels,
            [d.totals.revenue for d in found.days],
            title=t("overview.revenue_per_day"),
            show=amount,
            css="bar money",
        ),
        "times": line_chart(
            labels,
            [
                ("p50", [d.p50_s for d in found.days], "p50"),
                ("p95", [d.p95_s for d in found.days], "p95"),
            ],
            title=t("overview.job_time_per_day"),
            show=lambda v: show["duration"](v, "short"),
        ),
    }
    return page(
        request,
        "overview.html",
        "overview",
        overview=found,
        charts=charts,
        done=request.query_params.get("done"),
    )


def _day_param(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RequestError(f"{name} must be a day like 2026-11-26") from None


@described(
    dashboard_page(
        "orders",
        "Find orders: by email, job id, Stripe id or day; 50 a page",
        params=(
            Param("q", "query", "an email, job id, Stripe id"),
            Param("status", "query", "a job status"),
            Param("model", "query", "a model"),
            Param("since", "query", "from this day", DAY),
            Param("until", "query", "up to this day", DAY),
            Param("older", "query", "the next page: older than this order"),
        ),
        more_errors={400: "a day or status that is not one"},
    )
)
@signed_in()
async def orders(request: Request) -> Response:
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in set(JobStatus):
        raise RequestError("no such status")
    query = OrderQuery(
        text=params.get("q", "")[:320],
        status=status,
        model=params.get("model") or None,
        since=_day_param(request, "since"),
        until=_day_param(request, "until"),
        older_than=params.get("older") or None,
    )
    found = await in_session(request, lambda s: search_orders(s, query))
    older = None
    if found.older:
        kept = {k: v for k, v in params.items() if k != "older" and v}
        older = {**kept, "older": found.older}
    return page(
        request,
        "orders.html",
        "orders",
        found=found,
        query=query,
        statuses=list(JobStatus),
        models=list(MODELS),
        older=older,
        paged=bool(params.get("older")),
    )


def order_values(session: Session, request: Request, job_id: str) -> dict[str, Any]:
    """What the order page shows (blocking)."""
    services = services_of(request)
    details = job_details(session, job_id)
    job = get_job(session, job_id)
    details["job"].update(margin_of(job, services.config.pricing))
    left, currency = left_to_refund(session, job)
    seller = request.state.seller
    support_limit = services.config.dashboard.support_refund_limit
    deadlines = evidence_deadlines(session, [job_id])
    return {
        "details": details,
        "job": job,
        "refund_left": left,
        "refund_currency": currency,
        "refund_too_large": not seller.may("refund_any_amount") and left > support_limit,
        "support_limit": support_limit,
        "deadlines": deadlines,
        "emails": [m for m in details["outbox"] if m["kind"].startswith("email:")],
        "can": {
            "refund": job.status in REFUNDABLE and bool(job.stripe_payment_intent_id),
            "retry": job.status in RETRYABLE,
            "fulfil": job.status in SETTLEABLE and bool(job.stripe_session_id),
            "resend": job.status == JobStatus.COMPLETED
            and job.result_deleted_at is None
            and bool(job.customer_email),
            "erase": bool(job.customer_email) and seller.may("erase"),
        },
        "has_source": job.source_deleted_at is None and bool(job.source_key),
        "has_result": job.result_deleted_at is None
        and bool(job.result_key)
        and job.status in (JobStatus.COMPLETED, JobStatus.DISPUTED),
    }


async def order_page(
    request: Request, job_id: str, status_code: int = 200, **extra: Any
) -> Response:
    values = await in_session(request, lambda s: order_values(s, request, job_id))
    return page(request, "order.html", "orders", status_code=status_code, **values, **extra)


@described(
    dashboard_page(
        "order",
        "One order: timeline, images, money, emails, events, and what may be done",
        path={"job_id": JOB_ID},
        params=(Param("done", "query", "what was just done, to say so"),),
        more_errors={404: "no such order"},
    )
)
@signed_in()
async def order(request: Request) -> Response:
    return await order_page(
        request, request.path_params["job_id"], done=request.query_params.get("done")
    )


@described(
    dashboard_page(
        "orderThumbnail",
        "An order's source or result, small, as JPEG",
        path={"job_id": JOB_ID, "which": {"type": "string", "enum": ["source", "result"]}},
        shown=Answer(
            "the thumbnail", {"type": "string", "format": "binary"}, media_type="image/jpeg"
        ),
        more_errors={404: "no such order or image"},
    )
)
@signed_in()
async def thumbnail(request: Request) -> Response:
    job_id, which = request.path_params["job_id"], request.path_params["which"]
    if which not in ("source", "result"):
        raise NotFoundError("no such image")

    def key_of(session: Session) -> str | None:
        job = get_job(session, job_id)
        if which == "source":
            return job.source_key if job.source_deleted_at is None else None
        shown = job.status in (JobStatus.COMPLETED, JobStatus.DISPUTED)
        return job.result_key if shown and job.result_deleted_at is None else None

    key = await in_session(request, key_of)
    thumbnails: Thumbnails = request.app.state.thumbnails
    data = await off_loop(lambda: thumbnails.of(key)) if key else None
    if data is None:
        raise NotFoundError("no such image")
    return Response(
        data,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "private, max-age=300",
            "Cross-Origin-Resource-Policy": "same-origin",
        },
    )


@described(dashboard_page("fleet", "Queues, workers and previews"))
@signed_in()
async def fleet(request: Request) -> Response:
    services = services_of(request)
    found = await off_loop(lambda: read_fleet(services))
    return page(request, "fleet.html", "fleet", fleet=found)


@described(
    dashboard_page(
        "dashboardEvents",
        "Stripe events received",
        params=(
            Param("job", "query", "of this job"),
            Param("outcome", "query", "with this outcome"),
            Param("type", "query", "of this type"),
        ),
    )
)
@signed_in()
async def events(request: Request) -> Response:
    params = request.query_params
    outcome = params.get("outcome") or None
    found = await in_session(
        request,
        lambda s: list_events(
            s, params.get("job") or None, outcome, (params.get("type") or None), limit=100
        ),
    )
    return page(
        request,
        "events.html",
        "events",
        events=found,
        outcomes=OUTCOMES,
        filters={k: params.get(k, "") for k in ("job", "outcome", "type")},
    )


@described(
    dashboard_page(
        "dashboardEvent",
        "One Stripe event, its payload, and a replay",
        path={"event_id": "Stripe's event id"},
        params=(Param("done", "query", "a replay's outcome"),),
        more_errors={404: "no such event"},
    )
)
@signed_in()
async def event(request: Request) -> Response:
    event_id = request.path_params["event_id"]

    def work(session: Session) -> dict[str, Any]:
        found = session.get(WebhookEvent, event_id)
        if found is None:
            raise NotFoundError("no such event")
        return event_record(found, payload=True)

    record = await in_session(request, work)
    # Only an outcome a replay can have: never words someone put in a link.
    replayed = request.query_params.get("done", "")
    payload = json.dumps(record["payload"], indent=2, sort_keys=True) if record["payload"] else ""
    return page(
        request,
        "event.html",
        "events",
        event=record,
        payload=payload,
        done=replayed if replayed.replace("_", " ") in OUTCOMES else None,
    )


@described(
    dashboard_page(
        "reports",
        "Revenue by day",
        params=(Param("since", "query", "", DAY), Param("until", "query", "", DAY)),
        more_errors={400: "a day that is not one"},
    )
)
@signed_in("reports")
async def reports(request: Request) -> Response:
    since, until = _day_param(request, "since"), _day_param(request, "until")
    rows = await in_session(request, lambda s: revenue_by_day(s, since, until))
    return page(
        request,
        "reports.html",
        "reports",
        rows=list(reversed(rows)),
        since=since.isoformat() if since else "",
        until=until.isoformat() if until else "",
    )


@described(
    dashboard_page(
        "reportsCsv",
        "Revenue by day, as CSV",
        params=(Param("since", "query", "", DAY), Param("until", "query", "", DAY)),
        shown=Answer("the CSV file", {"type": "string"}, media_type="text/csv"),
        more_errors={400: "a day that is not one"},
    )
)
@signed_in("reports")
async def reports_csv(request: Request) -> Response:
    since, until = _day_param(request, "since"), _day_param(request, "until")
    rows = await in_session(request, lambda s: revenue_by_day(s, since, until))
    return PlainTextResponse(
        as_csv(rows),
        media_type="text/csv",
        headers={
            "Content-Disposition": 'attachment; filename="revenue.csv"',
            "Cache-Control": "no-store",
        },
    )


@described(dashboard_page("reconciliation", "The last reconciliation"))
@signed_in("reconcile")
async def reconciliation(request: Request) -> Response:
    def last(session: Session) -> dict[str, Any] | None:
        check = session.query(ReconciliationCheck).order_by(ReconciliationCheck.id.desc()).first()
        if check is None:
            return None
        return {"at": check.checked_at, "by": check.checked_by, **json.loads(check.report)}

    return page(
        request, "reconciliation.html", "reconciliation", check=await in_session(request, last)
    )


@described(dashboard_page("settings", "The gateway's settings, read-only"))
@signed_in("settings")
async def settings(request: Request) -> Response:
    return page(
        request, "settings.html", "settings", shown=read_settings(services_of(request).config)
    )


ROUTES = [
    Route("/dashboard", to_home, methods=["GET"]),
    Route("/dashboard/", overview, methods=["GET"]),
    Route("/dashboard/orders", orders, methods=["GET"]),
    Route("/dashboard/orders/{job_id}", order, methods=["GET"]),
    Route("/dashboard/orders/{job_id}/{which}.jpg", thumbnail, methods=["GET"]),
    Route("/dashboard/fleet", fleet, methods=["GET"]),
    Route("/dashboard/events", events, methods=["GET"]),
    Route("/dashboard/events/{event_id}", event, methods=["GET"]),
    Route("/dashboard/reports", reports, methods=["GET"]),
    Route("/dashboard/reports.csv", reports_csv, methods=["GET"]),
    Route("/dashboard/reconciliation", reconciliation, methods=["GET"]),
    Route("/dashboard/settings", settings, methods=["GET"]),
]
