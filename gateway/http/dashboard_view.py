"""How the dashboard's pages are written: templates, the seller's language, amounts and times.

    return page(request, "orders.html", "orders", orders=found)     # an HTMLResponse

Pages are Jinja2 templates in ``gateway/templates/dashboard/``. Every word
comes from the storefront's catalogues (``dashboard.*`` keys, ``t("nav.orders")``
in a template), every amount from ``format_money`` in the page's language,
every time in UTC as that language writes it. The language is the one the
seller picked (a cookie), else their browser's first that we speak.

Every page is answered with headers that keep it to itself: no caching, no
framing, no script or style from anywhere else, forms posting only here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Literal

from babel.dates import format_date, format_datetime, format_skeleton, format_timedelta
from babel.numbers import format_decimal
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.currencies import format_money
from gateway.languages import DEFAULT, LANGUAGES, translate
from gateway.store.tables import as_utc

LANGUAGE_COOKIE = "smi_dashboard_language"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Not no-referrer, as everywhere else: a browser then sends the form posts' Origin as
    # "null", and the guard could not tell our pages from another site's.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_TEMPLATES = Environment(
    loader=PackageLoader("gateway", "templates/dashboard"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# The menu: path, catalogue key (``dashboard.nav.KEY``), what the account must be allowed.
NAVIGATION = (
    ("/dashboard/", "overview", "view"),
    ("/dashboard/orders", "orders", "view"),
    ("/dashboard/fleet", "fleet", "view"),
    ("/dashboard/events", "events", "view"),
    ("/dashboard/reports", "reports", "reports"),
    ("/dashboard/reconciliation", "reconciliation", "reconcile"),
    ("/dashboard/erase", "erase", "erase"),
    ("/dashboard/accounts", "accounts", "accounts"),
    ("/dashboard/settings", "settings", "settings"),
)


def language_of(request: Request) -> str:
    """The seller's choice (a cookie), else the first of the browser's we speak."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    for part in request.headers.get("accept-language", "").split(",")[:20]:
        base = part.split(";")[0].strip().lower().replace("_", "-").split("-")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT


def words(language: str) -> Any:
    """``t(key, **params)``: the dashboard's words in ``language``."""

    def t(key: str, **params: object) -> str:
        return translate(language, f"dashboard.{key}", **params)

    return t


def helpers(language: str) -> dict[str, Any]:
    """What templates write values with, in ``language``."""

    def money(amount: int | None, currency: str) -> str:
        return "–" if amount is None else format_money(int(amount), currency, language)

    def when(moment: datetime | str | None) -> str:
        if not moment:
            return "–"
        if isinstance(moment, str):  # the admin API's records hold ISO 8601
            moment = datetime.fromisoformat(moment)
        return f"{format_datetime(as_utc(moment), 'medium', tzinfo=UTC, locale=language)} UTC"

    def day(value: date) -> str:
        return str(format_skeleton("MMMd", value, locale=language))

    def long_day(value: date) -> str:
        return str(format_date(value, "medium", locale=language))

    def duration(seconds: float | None, form: Literal["short", "long"] = "long") -> str:
        if seconds is None:
            return "–"
        moment = timedelta(seconds=seconds)
        return str(format_timedelta(moment, threshold=1.5, format=form, locale=language))

    def number(value: float | None, digits: int = 0) -> str:
        if value is None:
            return "–"
        return str(format_decimal(round(value, digits), locale=language))

    return {
        "t": words(language),
        "money": money,
        "when": when,
        "day": day,
        "long_day": long_day,
        "duration": duration,
        "number": number,
        "iso": lambda moment: as_utc(moment).isoformat() if moment else "",
    }


def render(template: str, language: str, **values: Any) -> str:
    return _TEMPLATES.get_template(template).render(
        language=language, languages=LANGUAGES, **helpers(language), **values
    )


def page(
    request: Request,
    template: str,
    current: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """A dashboard page for the request's seller (or none, before sign-in)."""
    language = language_of(request)
    seller = getattr(request.state, "seller", None)
    services = request.app.state.services
    body = render(
        template,
        language,
        seller=seller,
        csrf=getattr(request.state, "csrf", ""),
        current=current,
        path=request.url.path,
        url_query=request.url.query,
        mode=services.config.stripe.mode,
        shop_currency=services.config.pricing.currency,
        navigation=[item for item in NAVIGATION if seller and seller.may(item[2])],
        **values,
    )
    return HTMLResponse(body, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


def money_in(language: str) -> Any:
    """``format_money`` in ``language``, for figures drawn outside templates (charts)."""
    return partial(format_money, locale=language)
