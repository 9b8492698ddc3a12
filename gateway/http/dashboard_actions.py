"""The seller's dashboard: what changes the shop, each a form posted from its page.

    POST /dashboard/orders/{id}/refund      reason, confirm: refund what is left of the payment
    POST /dashboard/orders/{id}/retry       a failed job, once more
    POST /dashboard/orders/{id}/fulfil      a job awaiting payment: ask Stripe, fulfil if paid
    POST /dashboard/orders/{id}/resend      the completion email again, with a fresh link
    GET/POST /dashboard/erase               email, confirm: a customer's images and data
    POST /dashboard/events/{id}/replay      apply a stored Stripe event again
    POST /dashboard/reconciliation          compare Stripe with our records now
    GET/POST /dashboard/accounts            the team: add; .../{id}/reset, .../{id}/remove

Each stands behind ``@signed_in(ACTION)`` (the form token, the origin, the
role) and calls ``gateway.dashboard.actions``, which calls what the admin API
calls with the seller as the audit trail's source. A done action answers
303 to its page (``?done=...``, so a reload does not do it twice); a refused
one shows the page again with why, and the status the admin API would give.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.dashboard import actions
from gateway.errors import GatewayError, RequestError
from gateway.http.dashboard import JOB_ID, order_page
from gateway.http.dashboard_view import language_of, page, words
from gateway.http.errors import answer_for
from gateway.http.openapi import EMAIL, STRING, Param, described, errors, string
from gateway.http.requests import in_session, off_loop, services_of
from gateway.http.seller_auth import dashboard_form, dashboard_page, signed_in
from gateway.store import accounts
from gateway.store.accounts import AccountError, Seller
from gateway.store.tables import SellerAccount, SellerRole

log = logging.getLogger(__name__)

ORDER_REFUSED = {
    400: "the form is not complete (the order's page says what is missing)",
    404: "no such order",
    409: "the order's state does not allow it (its page says why)",
    **errors(502, 503),
}


def _done(path: str, what: str) -> Response:
    return RedirectResponse(f"{path}?done={what}", status_code=303)


async def _on_order(request: Request, what: str, work: Any) -> Response:
    """Do ``work`` to the order; back to its page, saying what was done or why not."""
    job_id = request.path_params["job_id"]
    try:
        await off_loop(work)
    except GatewayError as error:
        status, _ = answer_for(error)
        if status == 404:
            raise
        return await order_page(request, job_id, status_code=status, error=str(error))
    return _done(f"/dashboard/orders/{job_id}", what)


@described(
    dashboard_form(
        "dashboardRefund",
        "Refund what is left of an order's payment",
        {"reason": STRING, "confirm": {"type": "string", "const": "yes"}},
        required=("reason", "confirm"),
        path={"job_id": JOB_ID},
        more_errors=ORDER_REFUSED,
    )
)
@signed_in("refund")
async def refund(request: Request) -> Response:
    form, seller = request.state.form, request.state.seller
    t = words(language_of(request))
    job_id = request.path_params["job_id"]
    reason = form.get("reason", "").strip()[:500]
    if not reason or form.get("confirm") != "yes":
        return await order_page(request, job_id, status_code=400, error=t("order.refund_needs"))
    services = services_of(request)
    return await _on_order(
        request, "refund", lambda: actions.refund(services, seller, job_id, reason)
    )


@described(
    dashboard_form(
        "dashboardRetry",
        "A failed order, once more",
        path={"job_id": JOB_ID},
        more_errors=ORDER_REFUSED,
    )
)
@signed_in("retry")
async def retry(request: Request) -> Response:
    services, seller = services_of(request), request.state.seller
    job_id = request.path_params["job_id"]
    return await _on_order(request, "retry", lambda: actions.retry(services, seller, job_id))


@described(
    dashboard_form(
        "dashboardFulfil",
        "An order awaiting payment: ask Stripe, fulfil it if paid",
        path={"job_id": JOB_ID},
        more_errors=ORDER_REFUSED,
    )
)
@signed_in("fulfil")
async def fulfil(request: Request) -> Response:
    services, seller = services_of(request), request.state.seller
    job_id = request.path_params["job_id"]
    return await _on_order(request, "fulfil", lambda: actions.fulfil(services, seller, job_id))


@described(
    dashboard_form(
        "dashboardResend",
        "The completion email again, with a fresh link",
        path={"job_id": JOB_ID},
        more_errors=ORDER_REFUSED,
    )
)
@signed_in("resend")
async def resend(request: Request) -> Response:
    services, seller = services_of(request), request.state.seller
    job_id = request.path_params["job_id"]
    return await _on_order(request, "resend", lambda: actions.resend_link(services, seller, job_id))


@described(
    dashboard_page(
        "eraseForm",
        "Erase a customer's data: the form",
        params=(Param("email", "query", "the address to fill in"),),
    )
)
@signed_in("erase")
async def erase_form(request: Request) -> Response:
    return page(request, "erase.html", "erase", email=request.query_params.get("email", ""))


@described(
    dashboard_form(
        "dashboardErase",
        "Erase a customer's images and personal data",
        {"email": EMAIL, "confirm": string("the address again")},
        required=("email", "confirm"),
        shown="done: the page says what was erased and what is kept",
    )
)
@signed_in("erase")
async def erase(request: Request) -> Response:
    form, seller = request.state.form, request.state.seller
    t = words(language_of(request))
    email = form.get("email", "").strip()
    if not 3 <= len(email) <= 320 or "@" not in email:
        return page(request, "erase.html", "erase", 400, email=email, error=t("erase.address"))
    if form.get("confirm", "").strip().lower() != email.lower():
        return page(request, "erase.html", "erase", 400, email=email, error=t("erase.confirm"))
    services = services_of(request)
    done = await off_loop(lambda: actions.erase(services, seller, email))
    return page(request, "erase.html", "erase", email="", erasure=done)


@described(
    dashboard_form(
        "dashboardReplay",
        "Apply a stored Stripe event again",
        path={"event_id": "Stripe's event id"},
        more_errors={404: "no such event", **errors(502, 503)},
    )
)
@signed_in("replay")
async def replay(request: Request) -> Response:
    services, seller = services_of(request), request.state.seller
    event_id = request.path_params["event_id"]
    outcome = await off_loop(lambda: actions.replay(services, seller, event_id))
    return _done(f"/dashboard/events/{event_id}", outcome.replace(" ", "_"))


@described(
    dashboard_form(
        "dashboardReconcile",
        "Compare Stripe with our records now",
        more_errors=errors(502, 503),
    )
)
@signed_in("reconcile")
async def reconcile(request: Request) -> Response:
    services, seller = services_of(request), request.state.seller
    await off_loop(lambda: actions.reconcile(services, seller))
    return _done("/dashboard/reconciliation", "checked")


async def _accounts_page(request: Request, status_code: int = 200, **extra: Any) -> Response:
    found = await in_session(request, accounts.list_accounts)
    return page(
        request,
        "accounts.html",
        "accounts",
        status_code=status_code,
        accounts=found,
        roles=list(SellerRole),
        **extra,
    )


@described(
    dashboard_page(
        "accountsPage",
        "The team: its accounts",
        params=(Param("done", "query", "what was just done, to say so"),),
    )
)
@signed_in("accounts")
async def accounts_page(request: Request) -> Response:
    return await _accounts_page(request, done=request.query_params.get("done"))


@described(
    dashboard_form(
        "dashboardAddAccount",
        "Add an account: its one-time password, shown once",
        {"email": STRING, "role": {"type": "string", "enum": list(SellerRole)}},
        required=("email", "role"),
        shown="made: the page shows its one-time password, once",
        more_errors={409: "not an address, a role that is not one, or the address has one"},
    )
)
@signed_in("accounts")
async def add_account(request: Request) -> Response:
    form, seller = request.state.form, request.state.seller
    email, role = form.get("email", "").strip().lower(), form.get("role", "")

    def work(session: Session) -> str:
        _, password = accounts.add_account(session, email, role)
        return password

    try:
        password = await in_session(request, work, write=True)
    except AccountError as exc:
        return await _accounts_page(request, 409, error=str(exc))
    log.info("dashboard account added", extra={"seller": seller.email, "role": role})
    return await _accounts_page(request, shown_email=email, one_time=password)


def _account_email(session: Session, account_id: str) -> str:
    try:
        found = session.get(SellerAccount, int(account_id))
    except ValueError:
        found = None
    if found is None:
        raise AccountError("no such account")
    return found.email


@described(
    dashboard_form(
        "dashboardResetAccount",
        "A new one-time password for an account",
        path={"account_id": "the account's number"},
        shown="reset: the page shows its one-time password, once",
        more_errors={409: "no such account, or your own"},
    )
)
@signed_in("accounts")
async def reset_account(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    seller: Seller = request.state.seller
    shown: list[str] = []

    def work(session: Session) -> str:
        email = _account_email(session, account_id)
        shown.append(email)
        if email == seller.email:
            raise AccountError("change your own password on your account's page")
        return accounts.reset_password(session, email)

    try:
        password = await in_session(request, work, write=True)
    except AccountError as exc:
        return await _accounts_page(request, 409, error=str(exc))
    log.info("dashboard account reset", extra={"seller": seller.email, "account": shown[0]})
    return await _accounts_page(request, shown_email=shown[0], one_time=password)


@described(
    dashboard_form(
        "dashboardRemoveAccount",
        "Remove an account (never your own, never the last owner)",
        {"confirm": {"type": "string", "const": "yes"}},
        required=("confirm",),
        path={"account_id": "the account's number"},
        more_errors={409: "no such account, your own, or the last owner"},
    )
)
@signed_in("accounts")
async def remove_account(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    seller: Seller = request.state.seller
    if request.state.form.get("confirm") != "yes":
        raise RequestError("confirm the removal")

    def work(session: Session) -> None:
        email = _account_email(session, account_id)
        if email == seller.email:
            raise AccountError("an account cannot remove itself")
        accounts.remove_account(session, email)

    try:
        await in_session(request, work, write=True)
    except AccountError as exc:
        return await _accounts_page(request, 409, error=str(exc))
    log.info("dashboard account removed", extra={"seller": seller.email, "account": account_id})
    return _done("/dashboard/accounts", "removed")


ROUTES = [
    Route("/dashboard/orders/{job_id}/refund", refund, methods=["POST"]),
    Route("/dashboard/orders/{job_id}/retry", retry, methods=["POST"]),
    Route("/dashboard/orders/{job_id}/fulfil", fulfil, methods=["POST"]),
    Route("/dashboard/orders/{job_id}/resend", resend, methods=["POST"]),
    Route("/dashboard/erase", erase_form, methods=["GET"]),
    Route("/dashboard/erase", erase, methods=["POST"]),
    Route("/dashboard/events/{event_id}/replay", replay, methods=["POST"]),
    Route("/dashboard/reconciliation", reconcile, methods=["POST"]),
    Route("/dashboard/accounts", accounts_page, methods=["GET"]),
    Route("/dashboard/accounts", add_account, methods=["POST"]),
    Route("/dashboard/accounts/{account_id}/reset", reset_account, methods=["POST"]),
    Route("/dashboard/accounts/{account_id}/remove", remove_account, methods=["POST"]),
]
