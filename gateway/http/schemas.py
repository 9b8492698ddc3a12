"""The named shapes of the API's answers: ``components/schemas`` of ``/openapi.json``, and
the classes a generated client makes of them (``Job``, ``CheckoutStarted``, ``AdminJob``, ...).

They describe what ``gateway.store.queries`` (``job_record``, ``event_record``), the
endpoints' ``status_of`` and the reports write; ``tests/test_api_fuzz.py`` holds every
answer to them with its objects closed, so a field added there and not here fails. The
endpoints of ``gateway.http`` declare their operations beside them (``@described``) and
name these shapes.
"""

from __future__ import annotations

from gateway.http.openapi import (
    BOOLEAN,
    INTEGER,
    MAYBE_INTEGER,
    MAYBE_STRING,
    MAYBE_TIME,
    STRING,
    TIME,
    nullable,
    obj,
    schema,
    string,
)
from gateway.languages import LANGUAGES
from gateway.store.tables import EventOutcome, SellerRole
from shared.jobs import JobStatus
from shared.models import MODELS

# Money and models, as every answer gives them.
MODEL = string("an upscaling model", enum=sorted(MODELS))
OFFERED_MODEL = schema(
    "OfferedModel",
    string("a model this shop offers (SMI_OFFER_MODELS)", enum=sorted(MODELS)),
    for_config=lambda config: string(
        "a model this shop offers (SMI_OFFER_MODELS); its first by default",
        enum=list(config.pricing.models),
    ),
)
CURRENCY = string("ISO 4217, lower case (usd, eur, jpy)", pattern="^[a-z]{3}$")
AMOUNT = {
    "type": "integer",
    "description": "in the currency's smallest unit (cents; yen for JPY): Stripe's amounts",
}
EXPONENT = {
    "type": "integer",
    "description": "digits after the point: amount_cents / 10**currency_exponent is the price",
}
# Absent, null or empty: the shop's first model.
CHOSEN_MODEL = {"anyOf": [OFFERED_MODEL, {"type": "null"}, {"const": ""}]}

# The buyer's side: a job as its page shows it, a checkout's answer.
JOB = schema(
    "Job",
    obj(
        ("job_id", "status", "message", "message_key", "language", "model", "scale",
         "decline_code", "progress", "amount_cents", "currency", "currency_exponent", "width",
         "height", "created_at", "updated_at", "paid_at", "finished_at"),
        job_id=STRING,
        status=string(
            "awaiting_payment, then pending (paid, queued), processing and completed; "
            "or expired (never paid), failed, refunding, refunded, refund_failed, disputed",
            enum=list(JobStatus),
        ),
        message=string("where the job stands, for the buyer, in the job's language"),
        message_key={
            "type": ["string", "null"],
            "description": "the message's key in the storefront's catalogues (i18n)",
        },
        language=string("the buyer's language: its emails and pages", enum=list(LANGUAGES)),
        model=MODEL,
        scale={"type": "integer", "description": "how many times larger each side becomes"},
        decline_code=MAYBE_STRING,
        progress={"type": "number", "minimum": 0, "maximum": 1},
        amount_cents=AMOUNT,
        currency=CURRENCY,
        currency_exponent=EXPONENT,
        width={"type": "integer", "description": "the source image's width in pixels"},
        height={"type": "integer", "description": "the source image's height in pixels"},
        created_at=TIME,
        updated_at=TIME,
        paid_at=MAYBE_TIME,
        finished_at=MAYBE_TIME,
        download_url=string(
            "a fresh signed link to the result: a completed job, shown with its X-Buyer-Key",
            format="uri",
        ),
        download_expires_at=TIME,
        checkout_url=string(
            "Stripe's payment page: a job awaiting payment, shown with its X-Buyer-Key",
            format="uri",
        ),
    ),
)  # fmt: skip
OFFER = schema(
    "Offer",
    obj(
        ("model", "kind", "scale", "amount_cents", "output_width", "output_height"),
        model=MODEL,
        kind=string("what the model is for", enum=["photo", "illustration"]),
        scale=INTEGER,
        amount_cents=AMOUNT,
        output_width=INTEGER,
        output_height=INTEGER,
    ),
)
CHECKOUT_STARTED = schema(
    "CheckoutStarted",
    obj(
        ("job_id", "checkout_url", "amount_cents", "currency", "width", "height",
         "currency_exponent", "model", "scale", "offers", "buyer_key"),
        job_id=STRING,
        checkout_url=string("Stripe's payment page: send the buyer there", format="uri"),
        amount_cents=AMOUNT,
        currency=CURRENCY,
        width=INTEGER,
        height=INTEGER,
        currency_exponent=EXPONENT,
        model=MODEL,
        scale=INTEGER,
        offers={
            "type": "array",
            "items": OFFER,
            "description": "what each offered model would cost for this image",
        },
        buyer_key=string(
            "the buyer's proof for this job (the X-Buyer-Key header), in this answer only: "
            "keep it where the buyer's page can read it, never in an address"
        ),
    ),
)  # fmt: skip

# The seller's side: the admin API's records.
STATUS = string("a job's status", enum=list(JobStatus))
ADMIN_JOB = schema(
    "AdminJob",
    obj(
        ("job_id", "status", "image_url", "width", "height", "amount_cents", "currency", "model",
         "source_key", "customer_email", "stripe_session_id", "stripe_payment_intent_id",
         "customer_message", "decline_code", "failure_reason", "progress", "attempts",
         "result_size", "result_sha256", "created_at", "paid_at", "finished_at", "updated_at"),
        job_id=STRING,
        status=STATUS,
        image_url=string("the image sold (gone once the customer's data is erased)"),
        width=INTEGER,
        height=INTEGER,
        amount_cents=AMOUNT,
        currency=CURRENCY,
        model=MODEL,
        source_key=string("where its image is kept: sources/{its content's sha256}.{extension}"),
        customer_email=MAYBE_STRING,
        stripe_session_id=MAYBE_STRING,
        stripe_payment_intent_id=MAYBE_STRING,
        customer_message=STRING,
        decline_code=MAYBE_STRING,
        failure_reason=MAYBE_STRING,
        progress={"type": "number"},
        attempts=INTEGER,
        result_size=MAYBE_INTEGER,
        result_sha256=MAYBE_STRING,
        created_at=TIME,
        paid_at=MAYBE_TIME,
        finished_at=MAYBE_TIME,
        updated_at=TIME,
        cost_cents={"type": "integer", "description": "its GPU cost, where it is measured"},
        margin_cents={"type": "integer", "description": "its price less that cost"},
    ),
)  # fmt: skip
EVENT_FIELDS = {
    "event_id": STRING,
    "type": string("Stripe's event type"),
    "job_id": MAYBE_STRING,
    "outcome": string("what it did", enum=list(EventOutcome)),
    "detail": MAYBE_STRING,
    "deliveries": {"type": "integer", "description": "how often Stripe sent it"},
    "received_at": TIME,
    "last_received_at": MAYBE_TIME,
}
EVENT = schema("StripeEventRecord", obj(tuple(EVENT_FIELDS), **EVENT_FIELDS))
EVENT_WITH_PAYLOAD = schema(
    "StripeEventWithPayload",
    obj(
        (*EVENT_FIELDS, "payload"),
        **EVENT_FIELDS,
        payload=nullable({"type": "object", "description": "the event as Stripe sent it"}),
    ),
)
JOB_DETAILS = schema(
    "JobDetails",
    obj(
        ("job", "payment", "audit", "refunds", "disputes", "events", "notifications", "outbox"),
        job=ADMIN_JOB,
        payment=nullable(
            obj(
                ("amount_cents", "currency", "tax_cents", "discount_cents", "stripe_charge_id"),
                amount_cents=AMOUNT,
                currency=CURRENCY,
                tax_cents=INTEGER,
                discount_cents=INTEGER,
                stripe_charge_id=MAYBE_STRING,
            )
        ),
        audit={
            "type": "array",
            "items": obj(
                ("at", "from", "to", "reason", "source"),
                at=TIME,
                **{"from": nullable(STATUS)},
                to=STATUS,
                reason=STRING,
                source=string("who moved it: an event id, admin, seller:EMAIL, watchdog, ..."),
            ),
        },
        refunds={
            "type": "array",
            "items": obj(
                ("idempotency_key", "status", "stripe_refund_id", "amount_cents", "attempts",
                 "last_error", "reason"),
                idempotency_key=STRING,
                status=string("", enum=["pending", "succeeded", "failed", "canceled"]),
                stripe_refund_id=MAYBE_STRING,
                amount_cents=MAYBE_INTEGER,
                attempts=INTEGER,
                last_error=MAYBE_STRING,
                reason=STRING,
            ),
        },
        disputes={
            "type": "array",
            "items": obj(
                ("id", "status", "reason", "amount_cents", "currency", "created_at",
                 "closed_at"),
                id=STRING,
                status=string("Stripe's: needs_response, under_review, won, lost, ..."),
                reason=STRING,
                amount_cents=INTEGER,
                currency=CURRENCY,
                created_at=TIME,
                closed_at=MAYBE_TIME,
            ),
        },
        events={"type": "array", "items": EVENT},
        notifications={
            "type": "array",
            "items": obj(
                ("key", "kind", "sent_at", "attempts", "last_error"),
                key=STRING,
                kind=STRING,
                sent_at=MAYBE_TIME,
                attempts=INTEGER,
                last_error=MAYBE_STRING,
            ),
        },
        outbox={
            "type": "array",
            "items": obj(
                ("kind", "attempt", "published_at", "attempts", "last_error"),
                kind=STRING,
                attempt=INTEGER,
                published_at=MAYBE_TIME,
                attempts=INTEGER,
                last_error=MAYBE_STRING,
            ),
        },
    ),
)  # fmt: skip
JOB_DONE = obj(("job",), job=ADMIN_JOB)
REVENUE_DAY = schema(
    "RevenueDay",
    obj(
        ("day", "currency", "payments", "gross_cents", "refunds", "refunded_cents",
         "net_cents", "tax_cents", "discount_cents", "disputed_cents", "gross", "refunded",
         "net", "tax", "discount", "disputed"),
        day={"type": "string", "format": "date"},
        currency=CURRENCY,
        payments=INTEGER,
        gross_cents={"type": "integer", "description": "what Stripe took, after discounts"},
        refunds=INTEGER,
        refunded_cents=INTEGER,
        net_cents={"type": "integer", "description": "gross less refunds and lost disputes"},
        tax_cents=INTEGER,
        discount_cents=INTEGER,
        disputed_cents=INTEGER,
        gross=string("the same amount as people read it ($1,234.50)"),
        refunded=STRING,
        net=STRING,
        tax=STRING,
        discount=STRING,
        disputed=STRING,
    ),
)  # fmt: skip
RECONCILIATION = schema(
    "Reconciliation",
    obj(
        ("mismatches", "checked"),
        mismatches={
            "type": "array",
            "items": obj(
                ("kind", "stripe_id", "job_id", "amount_cents", "detail"),
                kind=string("paid_session_without_job, paid_session_not_fulfilled, ..."),
                stripe_id=MAYBE_STRING,
                job_id=MAYBE_STRING,
                amount_cents=MAYBE_INTEGER,
                detail=STRING,
            ),
        },
        checked=obj(
            ("checkout_sessions", "stripe_refunds", "jobs", "refunds"),
            checkout_sessions=INTEGER,
            stripe_refunds=INTEGER,
            jobs=INTEGER,
            refunds=INTEGER,
        ),
    ),
)
ERASURE = schema(
    "Erasure",
    obj(
        ("email", "erased", "in_progress", "kept"),
        email=STRING,
        erased={
            "type": "array",
            "items": STRING,
            "description": "jobs whose images, email address and addresses are gone",
        },
        in_progress={
            "type": "array",
            "items": STRING,
            "description": "jobs not finished yet: nothing erased; erase again after",
        },
        kept=string("what the financial record keeps"),
    ),
)
USER = schema(
    "SellerAccount",
    obj(
        ("email", "role", "password_is_temporary", "created_at", "last_sign_in_at", "sessions"),
        email=STRING,
        role=string("owner: everything; support: orders, small refunds", enum=list(SellerRole)),
        password_is_temporary=BOOLEAN,
        created_at=TIME,
        last_sign_in_at=MAYBE_TIME,
        sessions={"type": "integer", "description": "open dashboard sessions"},
    ),
)
USER_AND_PASSWORD = obj(
    ("user", "password"),
    user=USER,
    password=string("a one-time password: shown once, to be changed at the first sign-in"),
)

# A free preview.
PREVIEW = schema(
    "Preview",
    obj(
        ("preview_id", "model", "scale", "crop", "wait_s", "status"),
        preview_id=STRING,
        model=MODEL,
        scale=INTEGER,
        crop=obj(
            ("x", "y", "size", "width", "height"),
            x=INTEGER,
            y=INTEGER,
            size={"type": "integer", "description": "the square's side, in source pixels"},
            width={"type": "integer", "description": "the source image's width"},
            height={"type": "integer", "description": "the source image's height"},
        ),
        wait_s={"type": "number", "description": "how long the page waits for it"},
        status=string(
            "pending until a worker has made it; ready (before.png and after.png are there) "
            "or failed",
            enum=["pending", "ready", "failed"],
        ),
    ),
)
