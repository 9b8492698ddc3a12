"""The buyer's language: catalogues, choice, emails, the Checkout Session's locale."""

from __future__ import annotations

import json
import re
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from devtools.shop import SHOP_TEXT, create_shop_app
from gateway.currencies import format_money
from gateway.dashboard.overview import PERIODS
from gateway.delivery.emails import KINDS, EmailSettings, render_email
from gateway.http.dashboard_view import NAVIGATION
from gateway.languages import LANGUAGES, catalogue, choose, translate
from gateway.store.tables import Job, SellerRole
from shared.jobs import JobStatus
from shared.models import MODELS

CATALOGUES = Path(__file__).resolve().parent.parent / "gateway" / "static" / "i18n"


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_there_is_a_catalogue_for_each_language_and_no_other():
    assert sorted(path.stem for path in CATALOGUES.glob("*.json")) == sorted(LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_catalogue_says_everything_english_says_with_the_same_placeholders(language):
    english, other = catalogue("en"), catalogue(language)
    assert other.keys() == english.keys()
    for key, text in other.items():
        assert text.strip(), key
        assert placeholders(text) == placeholders(english[key]), key
    if language != "en":  # translated, not copied (but a name, a unit or a cognate may match)
        may_match = {
            "email.signature",
            "buy.sizes",
            "buy.option",
            "model.photo",
            "model.illustration",
        }
        may_match |= {f"dashboard.language.{code}" for code in LANGUAGES}  # each its own name
        same = [k for k in english if other[k] == english[k] and k not in may_match]
        assert not same, same


def test_the_script_uses_only_keys_the_catalogues_have():
    script = (CATALOGUES.parent / "smi-checkout.js").read_text()
    used = set(re.findall(r'\bt\(\s*"([a-z_.]+)"', script)) - {"model."}
    used |= {f"{prefix}.title" for prefix in ("refunded", "refunding")}
    used |= {f"model.{info.kind}" for info in MODELS.values()}  # t("model." + offer.kind)
    assert used and used <= catalogue("en").keys(), used - catalogue("en").keys()
    assert json.loads((CATALOGUES / "en.json").read_text())  # valid JSON for the browser


def test_the_dashboard_uses_only_keys_the_catalogues_have():
    """``t("key")`` in the dashboard's templates and code is ``dashboard.key``; keys put
    together from a prefix (``t("status." ~ job.status)``) are listed with what fills them."""
    templates = CATALOGUES.parent.parent / "templates" / "dashboard"
    code = [templates.glob("*.html"), (CATALOGUES.parent.parent / "http").glob("*.py")]
    text = "".join(path.read_text() for paths in code for path in paths)
    used = set(re.findall(r'\bt\(\s*"([a-z0-9_.]+)"\s*[,)]', text))
    filled = {
        "nav": [key for _, key, _ in NAVIGATION] + ["account", "sign_in"],
        "role": list(SellerRole),
        "status": list(JobStatus),
        "language": list(LANGUAGES),
        "period": list(PERIODS),
        "email_kind": list(KINDS),
        "mode": ["test", "live"],
        "order.done": ["refund", "retry", "fulfil", "resend"],
        "orders.matched_as": ["day", "email", "job", "session", "payment", "charge", "refund",
                              "dispute", "text"],
        "attention.stuck": ["pending", "silent", "refunding"],
        "fleet.backlog": ["outbox", "email", "refund", "notification"],
        "advice": ["metrics", "notifications", "origins", "database", "support_limit"],
        "error": ["not_found", "not_permitted", "cross_site_request", "unauthorized",
                  "conflict", "invalid_request", "rate_limited"],
    }  # fmt: skip
    for prefix, values in filled.items():
        separator = "_" if prefix in ("attention.stuck", "fleet.backlog") else "."
        assert f't("{prefix}{separator}" ~' in text or prefix in ("mode",), prefix
        used |= {f"{prefix}{separator}{value}" for value in values}
    missing = {f"dashboard.{key}" for key in used} - catalogue("en").keys()
    assert not missing, missing


@pytest.mark.parametrize(
    ("tag", "language"),
    [("fr-CA", "fr"), ("de_AT", "de"), ("ES", "es"), ("ja-JP", "ja"), ("pt-BR", "en"),
     ("", "en"), (None, "en"), (7, "en")],
)  # fmt: skip
def test_a_tag_chooses_a_language_we_speak_or_english(tag, language):
    assert choose(tag) == language


def a_job(language: str, currency: str = "jpy", amount: int = 192) -> Job:
    return Job(
        id="job_abc",
        status="completed",
        image_url="https://shop.example/cat.jpg",
        source_key="jobs/job_abc/source.jpg",
        width=500,
        height=500,
        amount_cents=amount,
        currency=currency,
        language=language,
        model="RealESRGAN_x4plus",
        customer_email="buyer@example.com",
        customer_message="",
    )


def test_a_japanese_buyer_gets_japanese_emails_with_yen_and_a_japanese_date():
    settings = EmailSettings("Shop <noreply@example.com>", "support@example.com")
    expires = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    message = render_email(
        a_job("ja"), "completed", settings, download_url="https://g/d/x", download_expires=expires
    )
    assert message["Subject"] == "4倍の画像をダウンロードできます"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "￥192" in body and "4倍の画像の準備ができました。" in body
        assert "2026/12/04" in body and "support@example.com" in body
    assert '<html lang="ja">' in html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_email_renders_in_every_language(language, kind):
    settings = EmailSettings("Shop <noreply@example.com>", "support@example.com")
    extra = {"download_url": "https://g/d/x", "download_expires": datetime.now(UTC)}
    message = render_email(a_job(language, "eur", 192), kind, settings, **extra)
    assert message["Subject"] == translate(language, f"email.subject.{kind}", scale=4)
    text = message.get_body(("plain",)).get_content()
    assert translate(language, "email.hello") in text
    assert format_money(192, "eur", language) in text and "{" not in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_demo_shop_speaks_the_chosen_language(language):
    """Its own words too, not only the gateway's buttons: a Japanese page is Japanese."""
    with TestClient(create_shop_app("http://127.0.0.1:9")) as client:
        page = client.get("/", params={"lang": language})
    assert page.status_code == 200
    assert f'<html lang="{language}">' in page.text
    text = SHOP_TEXT[language]
    for key in ("title", "language", "emails", "cat"):
        assert str(escape(text[key])) in page.text, key  # as the template escapes it
    if language != "en":
        assert SHOP_TEXT["en"]["title"] not in page.text
