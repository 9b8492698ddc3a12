"""``POST /api/checkout``: measure the image, price it, create the job and its Checkout Session."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from gateway.config import GatewayConfig
from gateway.currencies import exponent
from gateway.delivery.links import new_buyer_key
from gateway.errors import GatewayError, RequestError
from gateway.images.sources import fetch_source, split_url
from gateway.images.storing import EXTENSIONS, ensure_room, source_policy
from gateway.languages import choose
from gateway.money.payments import Payments
from gateway.money.pricing import quote_price
from gateway.store.lifecycle import (
    NewJob,
    create_job,
    expire,
    get_job,
    hold_source,
    new_job_id,
    record_checkout_session,
)
from shared.models import MODELS
from shared.storage import Storage, source_key_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckoutStarted:
    job_id: str
    checkout_url: str
    amount_cents: int  # in the currency's smallest unit (Stripe's amount)
    currency: str
    width: int
    height: int
    currency_exponent: int  # digits after the point: amount / 10**exponent is the price
    model: str
    scale: int
    # What each offered model would cost for this image: the buyer may choose another.
    offers: list[dict[str, Any]]
    # The buyer's proof for this job's download (``X-Buyer-Key``): in this answer only.
    buyer_key: str


@dataclass(frozen=True)
class CheckoutRequest:
    """What the buyer's click asks for."""

    image_url: str
    return_url: str
    language: str  # one of ``languages.LANGUAGES``: emails and Stripe's page in it
    model: str | None = None  # one of the offered models; None: the first offered


def parse_checkout_request(
    body: Any, default_return_url: str, return_origins: tuple[str, ...] = ()
) -> CheckoutRequest:
    """The checkout the JSON body asks for, or ``RequestError``.

    The customer comes back to ``return_url`` after paying, so it must be on
    one of ``return_origins`` (the shops and the gateway itself): anything
    else would make the payment page an open redirect. ``language`` is the
    page's (a BCP 47 tag); one we do not have becomes English.
    """
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    if "price" in body or "amount" in body or "amount_cents" in body:
        raise RequestError("prices are computed by the server; do not send one")
    image_url = body.get("image_url")
    if not isinstance(image_url, str) or not image_url.strip():
        raise RequestError("image_url is required")
    return_url = body.get("return_url", default_return_url)
    parts = split_url(return_url) if isinstance(return_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestError("return_url must be an http(s) URL")
    if return_origins and origin_of(return_url) not in return_origins:
        raise RequestError("return_url must be on the shop's own site")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string")
    return CheckoutRequest(image_url.strip(), return_url, choose(body.get("language")), model)


def origin_of(url: str) -> str:
    """``https://shop.example`` of ``https://shop.example/a/b?c``, lower-cased."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def start_checkout(
    config: GatewayConfig,
    sessions: sessionmaker[Session],
    payments: Payments,
    storage: Storage,
    request: CheckoutRequest,
) -> CheckoutStarted:
    """Fetch and store the image, create the job, then the Checkout Session."""
    ensure_room(config, storage)
    image_url, return_url = request.image_url, request.return_url
    policy = source_policy(config)
    offered = config.pricing.models
    model = request.model or offered[0]
    if model not in offered:
        raise RequestError(
            f"model {model!r} is not offered here; choose one of {', '.join(offered)}"
        )
    source = fetch_source(image_url, policy)
    quotes = [quote_price(source.width, source.height, config.pricing, name) for name in offered]
    quote = next(q for q in quotes if q.model == model)
    job_id = new_job_id()
    buyer_key, key_hash = new_buyer_key()
    source_key = source_key_for(hashlib.sha256(source.data).hexdigest(), EXTENSIONS[source.format])
    with sessions.begin() as session:
        hold_source(session, source_key)  # retention does not delete it under us
        create_job(
            session,
            NewJob(
                image_url,
                source_key,
                source.width,
                source.height,
                quote.amount_cents,
                quote.currency,
                return_url,
                request.language,
                model,
                key_hash,
            ),
            job_id,
        )
    try:
        # Written after the job that needs it is committed, whether or not another job's
        # copy is there: a retention pass that deleted it before our commit cannot win.
        storage.put(source_key, source.data)
        checkout = payments.create_checkout_session(
            job_id, quote, return_url, config.checkout_expires_minutes, request.language
        )
    except (GatewayError, OSError) as exc:
        with sessions.begin() as session:
            expire(
                session,
                get_job(session, job_id, lock=True),
                f"checkout session not created: {exc}",
                "checkout",
                "Checkout could not be started. Nothing was charged.",
            )
        raise
    with sessions.begin() as session:
        record_checkout_session(session, job_id, checkout.id, str(checkout.url))
    log.info(
        "checkout created",
        extra={"job_id": job_id, "session_id": checkout.id, "amount_cents": quote.amount_cents},
    )
    return CheckoutStarted(
        job_id,
        str(checkout.url),
        quote.amount_cents,
        quote.currency,
        source.width,
        source.height,
        exponent(quote.currency),
        model,
        quote.scale,
        [
            {
                "model": q.model,
                "kind": MODELS[q.model].kind,
                "scale": q.scale,
                "amount_cents": q.amount_cents,
                "output_width": q.output_width,
                "output_height": q.output_height,
            }
            for q in quotes
        ],
        buyer_key,
    )
