"""Signing in to the seller's dashboard, and the guard every dashboard page stands behind.

    GET/POST /dashboard/sign-in       email and password; a one-time password leads on to
    GET/POST /dashboard/password      choosing the account's own (nothing else opens before)
    POST     /dashboard/sign-out
    GET      /dashboard/account       your open sessions; POST .../end-others ends them
    GET      /dashboard/language      ?lang=fr&next=/dashboard/orders: the pages' language

``@signed_in("refund")`` lets a request through only when all of these hold:

- it is not another site's doing: a browser's ``Sec-Fetch-Site`` is
  same-origin or none (a link followed from elsewhere may open a page, never
  change anything), and a change (``POST``) names this origin in ``Origin``
  (a browser always sends it here: the pages say ``Referrer-Policy:
  same-origin``) and carries the session's form token (``csrf``);
- its cookie opens a live session (HttpOnly, SameSite=Strict, Secure unless
  the gateway is reached on loopback; the row ends on sign-out, after
  ``SMI_DASHBOARD_IDLE_MINUTES`` without a request, and
  ``SMI_DASHBOARD_SESSION_HOURS`` after sign-in whatever happens);
- the account has chosen its own password, and its role allows the action.

Anything else is answered with a page saying why (401 sends a page request
to the sign-in form). Failed sign-ins lock the account and the client
address for a while (``gateway.store.accounts``): 429 with ``Retry-After``.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from ipaddress import ip_address
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.config import DashboardConfig
from gateway.dashboard.actions import require
from gateway.errors import (
    CrossSiteRequestError,
    GatewayError,
    NotPermittedError,
    RateLimitedError,
    RequestError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from gateway.http.dashboard_view import LANGUAGE_COOKIE, language_of, page, words
from gateway.http.errors import answer_for
from gateway.http.limits import client_of
from gateway.http.openapi import (
    FORM,
    HTML,
    SIGNED_IN,
    STRING,
    Answer,
    Body,
    Header,
    Operation,
    Param,
    Schema,
    described,
    errors,
    obj,
    string,
)
from gateway.http.requests import in_session, off_loop, read_body, services_of, storable
from gateway.languages import LANGUAGES
from gateway.store import accounts
from gateway.store.accounts import AccountError, Seller, SessionRules, SignInRefused

log = logging.getLogger(__name__)

COOKIE = "smi_dashboard"
SECURE_COOKIE = "__Secure-smi_dashboard"  # a browser keeps it only from https
COOKIE_PATH = "/dashboard"
FORM_LIMIT = 64 * 1024
HOME = "/dashboard/"
SIGN_IN = "/dashboard/sign-in"
PASSWORD = "/dashboard/password"
Handler = Callable[[Request], Awaitable[Response]]

# The dashboard in the OpenAPI description: pages and forms for a browser, answered in HTML.
PAGE = Answer("the page", {"type": "string"}, media_type=HTML)
SEE_OTHER = Answer(
    "to another page: the sign-in form (?next= this page) when not signed in, the password "
    "form while the account's one-time password is not changed, or after a change the page "
    "that shows it (?done=...)",
    headers={"Location": Header("the page to go to", required=True)},
)
REFUSED_PAGE = {
    403: "cross_site_request (another site's doing: a change without this session's form "
    "token or from another origin) or not_permitted (the account's role does not allow it)",
}
CSRF = string("the session's form token, from the page's form")
FORM_REFUSED = {
    400: "the form cannot be read, or what it asks is not right (the page says why)",
    401: "sign in first",
    **REFUSED_PAGE,
    413: errors(413)[413],
    415: "send the form as application/x-www-form-urlencoded",
}


def dashboard_page(
    operation_id: str,
    summary: str,
    *,
    shown: Answer = PAGE,
    more_errors: dict[int, str] | None = None,
    **more: Any,
) -> Operation:
    """A page of the dashboard behind ``@signed_in``, as the OpenAPI description shows it."""
    return Operation(
        operation_id,
        summary,
        tags=("dashboard",),
        security=SIGNED_IN,
        answers={200: shown, 303: SEE_OTHER},
        errors={**REFUSED_PAGE, **(more_errors or {})},
        error_media_types=(HTML,),
        **more,
    )


def dashboard_form(
    operation_id: str,
    summary: str,
    fields: dict[str, Schema] | None = None,
    *,
    required: tuple[str, ...] = (),
    shown: str = "",
    more_errors: dict[int, str] | None = None,
    **more: Any,
) -> Operation:
    """A form of the dashboard behind ``@signed_in``: 303 once done (``shown``: 200 with
    the page that shows what was done), the page again with why when refused."""
    answers = {303: SEE_OTHER, **({200: Answer(shown, PAGE.body, HTML)} if shown else {})}
    return Operation(
        operation_id,
        summary,
        tags=("dashboard",),
        security=SIGNED_IN,
        body=Body(
            "the page's form",
            obj(("csrf", *required), csrf=CSRF, **(fields or {})),
            media_type=FORM,
        ),
        answers=answers,
        errors={**FORM_REFUSED, **(more_errors or {})},
        error_media_types=(HTML,),
        **more,
    )


def rules_of(config: DashboardConfig) -> SessionRules:
    return SessionRules(
        lifetime=timedelta(hours=config.session_hours),
        idle=timedelta(minutes=config.idle_minutes),
        max_failures=config.max_failures,
        max_failures_per_address=config.max_failures_per_address,
        lockout=timedelta(minutes=config.lockout_minutes),
    )


def on_loopback(request: Request) -> bool:
    """Whether the browser reached us on a loopback address (the one place without TLS)."""
    host = (request.url.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_name(request: Request) -> str:
    return COOKIE if on_loopback(request) else SECURE_COOKIE


def _keep_session(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        cookie_name(request),
        token,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=not on_loopback(request),
        httponly=True,
        samesite="strict",
    )


def _forget_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        cookie_name(request),
        path=COOKIE_PATH,
        secure=not on_loopback(request),
        httponly=True,
        samesite="strict",
    )


def refuse_other_sites(request: Request) -> None:
    """``CrossSiteRequestError`` for what another origin's page made the browser ask."""
    site = request.headers.get("sec-fetch-site")
    if site in (None, "same-origin", "none"):
        return
    if request.method == "GET" and request.headers.get("sec-fetch-mode") == "navigate":
        return  # a link from elsewhere: it may open a page (SameSite keeps the cookie away)
    raise CrossSiteRequestError("the dashboard answers only its own pages")


def check_origin(request: Request) -> None:
    """A change must come from a page of ours: ``Origin`` names this gateway (a browser
    sends it with every POST); a client that sends none still needs the form token."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    public = urlsplit(services_of(request).config.public_url)
    ours = {
        f"{public.scheme}://{public.netloc}",
        f"{request.url.scheme}://{request.headers.get('host', '')}",
    }
    if origin not in ours:
        raise CrossSiteRequestError("a change to the dashboard must come from its own pages")


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, each field's first value."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, FORM_LIMIT)
    if body and media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError("send the form as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError("the form cannot be read") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return storable(form, "the form")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path of ours, never another site."""
    if not target or not target.startswith("/dashboard") or "\\" in target or "//" in target:
        return HOME
    return target


async def _seller_of(request: Request, token: str) -> Seller | None:
    rules = rules_of(services_of(request).config.dashboard)
    sessions = services_of(request).sessions

    def work() -> Seller | None:
        with sessions() as session:
            seller = accounts.find_session(session, token, rules)
            if session.dirty:
                session.commit()
            return seller

    return await off_loop(work)


def error_page(request: Request, error: GatewayError) -> Response:
    """A page saying why, with the status the JSON API would give."""
    status, kind = answer_for(error)
    if isinstance(error, CrossSiteRequestError | NotPermittedError):  # worth a look
        seller = getattr(request.state, "seller", None)
        log.warning(
            "dashboard request refused: %s",
            error,
            extra={
                "path": request.url.path,
                "method": request.method,
                "seller": seller.email if seller else None,
                "fetch_site": request.headers.get("sec-fetch-site"),
                "origin": request.headers.get("origin"),
            },
        )
    headers = {}
    if isinstance(error, RateLimitedError):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, UnauthorizedError) and request.method == "GET":
        return RedirectResponse(f"{SIGN_IN}?next={quote(request.url.path)}", status_code=303)
    return page(
        request, "error.html", "", status_code=status, headers=headers, error=str(error), kind=kind
    )


def signed_in(action: str = "view", *, temporary_too: bool = False) -> Callable[[Handler], Handler]:
    """The guard of a dashboard page or action (see the module docstring)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            try:
                refuse_other_sites(request)
                token = request.cookies.get(cookie_name(request), "")
                seller = await _seller_of(request, token) if token else None
                if seller is None:
                    raise UnauthorizedError("sign in first", realm="smi-dashboard")
                request.state.seller = seller
                request.state.csrf = accounts.csrf_token(token)
                request.state.token = token
                if request.method == "POST":
                    check_origin(request)
                    form = await read_form(request)
                    if not hmac.compare_digest(form.get("csrf", ""), request.state.csrf):
                        raise CrossSiteRequestError("the form is not one of this session's pages")
                    request.state.form = form
                if seller.password_is_temporary and not temporary_too:
                    return RedirectResponse(PASSWORD, status_code=303)
                require(seller, action)
                return await handler(request)
            except GatewayError as error:
                return error_page(request, error)

        return guarded

    return wrap


@described(
    Operation(
        "signInForm",
        "The dashboard's sign-in form",
        tags=("dashboard",),
        params=(Param("next", "query", "the dashboard page to go to after signing in"),),
        answers={200: PAGE},
    )
)
async def sign_in_form(request: Request) -> Response:
    return page(
        request,
        "sign_in.html",
        "sign_in",
        next=safe_next(request.query_params.get("next")),
        email="",
        # Behind a proxy the request itself is http; the gateway's own address says.
        insecure=not services_of(request).config.public_url.startswith("https://")
        and not on_loopback(request),
    )


@described(
    Operation(
        "signIn",
        "Sign in to the dashboard: the session cookie",
        tags=("dashboard",),
        description="Failed sign-ins lock the account and the client address for a while.",
        body=Body(
            "the sign-in form",
            obj(("email", "password"), email=STRING, password=STRING, next=STRING),
            media_type=FORM,
        ),
        answers={
            303: Answer(
                "signed in: the session cookie, and on to ?next= (or the password form)",
                headers={
                    "Location": Header("the page to go to", required=True),
                    "Set-Cookie": Header("the session: smi_dashboard (__Secure- over https)"),
                },
            ),
        },
        errors={
            **FORM_REFUSED,
            401: "the address or password is wrong",
            429: "too many failed sign-ins: locked for a while (Retry-After)",
        },
        error_media_types=(HTML,),
    )
)
async def sign_in(request: Request) -> Response:
    try:
        refuse_other_sites(request)
        check_origin(request)
        form = await read_form(request)
    except GatewayError as error:
        return error_page(request, error)
    services = services_of(request)
    rules = rules_of(services.config.dashboard)
    email, password = form.get("email", "").strip(), form.get("password", "")
    address = client_of(request)

    def attempt(session: Any) -> Seller | SignInRefused:
        try:
            return accounts.sign_in(session, email, password, address, rules)
        except SignInRefused as refused:
            return refused  # returned, not raised: the failure's count is committed

    outcome = await in_session(request, attempt, write=True)
    t = words(language_of(request))
    if isinstance(outcome, SignInRefused):
        log.warning(
            "dashboard sign-in refused",
            extra={"client": address, "locked": bool(outcome.retry_after_s)},
        )
        values: dict[str, Any] = {
            "next": safe_next(form.get("next")),
            "email": email,
            "insecure": False,
        }
        if outcome.retry_after_s:
            minutes = max(1, round(outcome.retry_after_s / 60))
            return page(
                request,
                "sign_in.html",
                "sign_in",
                status_code=429,
                headers={"Retry-After": str(outcome.retry_after_s)},
                error=t("sign_in.locked", minutes=minutes),
                **values,
            )
        return page(
            request,
            "sign_in.html",
            "sign_in",
            status_code=401,
            error=t("sign_in.wrong"),
            **values,
        )
    seller = outcome
    agent = request.headers.get("user-agent", "")
    token = await in_session(
        request, lambda s: accounts.open_session(s, seller, rules, address, agent), write=True
    )
    log.info("dashboard sign-in", extra={"seller": seller.email, "client": address})
    target = PASSWORD if seller.password_is_temporary else safe_next(form.get("next"))
    response = RedirectResponse(target, status_code=303)
    _keep_session(response, request, token, int(rules.lifetime.total_seconds()))
    return response


@described(dashboard_form("signOut", "End this session"))
@signed_in(temporary_too=True)
async def sign_out(request: Request) -> Response:
    token = request.state.token
    await in_session(request, lambda s: accounts.end_session(s, token), write=True)
    response = RedirectResponse(SIGN_IN, status_code=303)
    _forget_session(response, request)
    return response


@described(dashboard_page("passwordForm", "Choose the account's own password"))
@signed_in(temporary_too=True)
async def password_form(request: Request) -> Response:
    return page(request, "password.html", "account")


@described(
    dashboard_form(
        "changePassword",
        "Change the account's password; its other sessions end",
        {"current": STRING, "new": STRING, "repeat": STRING},
        required=("current", "new", "repeat"),
    )
)
@signed_in(temporary_too=True)
async def change_password(request: Request) -> Response:
    seller: Seller = request.state.seller
    form = request.state.form
    new = form.get("new", "")
    t = words(language_of(request))
    if new != form.get("repeat", ""):
        return page(request, "password.html", "account", 400, error=t("password.differ"))

    def work(session: Any) -> None:
        accounts.change_password(session, seller.account_id, form.get("current", ""), new)
        accounts.end_sessions(session, seller.account_id, keep=request.state.token)

    try:
        await in_session(request, work, write=True)
    except AccountError as exc:
        return page(request, "password.html", "account", 400, error=str(exc))
    log.info("dashboard password changed", extra={"seller": seller.email})
    return RedirectResponse(f"{HOME}?done=password", status_code=303)


@described(dashboard_page("accountPage", "The account and its open sessions"))
@signed_in()
async def account(request: Request) -> Response:
    seller: Seller = request.state.seller
    open_sessions = await in_session(request, lambda s: accounts.sessions_of(s, seller.account_id))
    current = accounts.token_hash(request.state.token)
    return page(
        request,
        "account.html",
        "account",
        sessions=open_sessions,
        current_session=current,
        done=request.query_params.get("done"),
    )


@described(dashboard_form("endOtherSessions", "End the account's other sessions"))
@signed_in()
async def end_other_sessions(request: Request) -> Response:
    seller: Seller = request.state.seller
    token = request.state.token
    await in_session(
        request, lambda s: accounts.end_sessions(s, seller.account_id, keep=token), write=True
    )
    return RedirectResponse("/dashboard/account?done=ended", status_code=303)


@described(
    Operation(
        "chooseLanguage",
        "The dashboard's language (a cookie), then on to ?next=",
        tags=("dashboard",),
        params=(
            Param("lang", "query", "en, fr, de, es or ja"),
            Param("next", "query", "the dashboard page to go to"),
        ),
        answers={303: SEE_OTHER},
    )
)
async def choose_language(request: Request) -> Response:
    chosen = request.query_params.get("lang", "")
    response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    if chosen in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE,
            chosen,
            max_age=365 * 86400,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
        )
    return response


ROUTES = [
    Route(SIGN_IN, sign_in_form, methods=["GET"]),
    Route(SIGN_IN, sign_in, methods=["POST"]),
    Route("/dashboard/sign-out", sign_out, methods=["POST"]),
    Route(PASSWORD, password_form, methods=["GET"]),
    Route(PASSWORD, change_password, methods=["POST"]),
    Route("/dashboard/account", account, methods=["GET"]),
    Route("/dashboard/account/end-others", end_other_sessions, methods=["POST"]),
    Route("/dashboard/language", choose_language, methods=["GET"]),
]
