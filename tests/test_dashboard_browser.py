"""The seller's dashboard in a real browser (Debian's Chromium through Playwright).

One gateway on PostgreSQL with a month of a shop's history behind it
(``devtools/shop_history.py``), the Stripe emulator through the SDK, its
background work driven by hand (``test_recovery.hand_driven``): a seller
signs in, finds an order from the buyer's email and refunds it (the buyer
gets one email, Stripe makes one refund); a support account is refused a
refund over its limit and an erasure; a change without the form's token, or
sent with the seller's cookie from another origin's page, is refused; failed
sign-ins lock the account. Each page is checked for what a keyboard and a
screen reader need, and photographed into ``docs/`` (the README shows them).
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from test_dashboard import PASSWORD, add_account, emails_of
from test_recovery import Loop, hand_driven

from conftest import postgres_database, sample
from devtools.shop_history import write_history
from servers import serve
from shared.messages import EventKind
from shared.storage import Storage
from upscaler.output.images import encode_image

pytestmark = pytest.mark.timeout(600)

DOCS = Path(__file__).resolve().parent.parent / "docs"
WIDE = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Iterator[Loop]:
    tmp = tmp_path_factory.mktemp("dashboard")
    bench = tmp / "x4plus.json"
    bench.write_text(json.dumps({"model": "RealESRGAN_x4plus", "input_megapixels_per_s": 0.05}))
    settings = {
        "SMI_SUPPORT_REFUND_LIMIT": "40",  # a job here costs 50 cents
        "SMI_SIGN_IN_MAX_FAILURES": "3",
        "SMI_GPU_COST_PER_HOUR": "300",
        "SMI_BENCH_FILES": str(bench),
    }
    with postgres_database() as url, hand_driven(url, tmp, **settings) as loop:
        with loop.sessions() as session:
            write_history(session.get_bind(), 900, days=30, customers=300, seed=11)
        loop.buy(card="4000000000000259", email="disputes@buyer.example")  # the bank disputes it
        yield loop


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: run `make browser`"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[str]:
    """A page on another origin of this host: what an attacker's page would be."""

    async def blank(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>elsewhere</title><p>nothing to see</p>")

    with serve(Starlette(routes=[Route("/", blank)])) as url:
        yield f"{url}/"


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport=WIDE)
    yield context.new_page()
    context.close()


def delivered(shop: Loop, email: str) -> str:
    """A job bought by ``email`` and completed by its worker, a real result stored."""
    job_id = shop.buy(email=email)
    upscaled = cv2.resize(sample("coffee")[100:180, 200:320], (480, 320), cv2.INTER_CUBIC)
    key = f"jobs/{job_id}/result.png"
    Storage(shop.stack.config.storage_url).put(
        key, encode_image(np.ascontiguousarray(upscaled), "png")
    )
    shop.event(job_id, EventKind.STARTED, progress=0.0, worker="gpu-a:11")
    shop.event(job_id, EventKind.COMPLETED, result_key=key, progress=1.0, worker="gpu-a:11")
    shop.email_relay().send_due()
    return job_id


def photograph(page: Page, name: str, full_page: bool = False) -> None:
    """``docs/dashboard-NAME.png``, in 256 colours (a page of text and flat colour loses
    nothing a reader sees, and the repository a few megabytes)."""
    shot = Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
    shot.quantize(colors=256).save(DOCS / f"dashboard-{name}.png", optimize=True)


def sign_in(page: Page, shop: Loop, email: str, password: str) -> None:
    page.goto(f"{shop.stack.gateway}/dashboard/sign-in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def new_seller(page: Page, shop: Loop, email: str, role: str, shots: bool = False) -> None:
    """An account made with its one-time password, signed in, its own password chosen."""
    one_time = add_account(shop, email, role)
    page.goto(f"{shop.stack.gateway}/dashboard/")
    expect(page.get_by_role("heading", name="Sign in to your shop")).to_be_visible()
    if shots:
        page.get_by_label("Email address").fill(email)
        photograph(page, "sign-in")
    sign_in(page, shop, email, one_time)
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("New password again").fill(PASSWORD)
    page.get_by_role("button", name="Save the password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password is changed")


def check_usable(page: Page) -> None:
    """What a keyboard and a screen reader need of any page: its language, one main heading,
    a name for every field and image, a skip link first."""
    facts = page.evaluate(
        """() => ({
          lang: document.documentElement.lang,
          h1: document.querySelectorAll("h1").length,
          unnamed: [...document.querySelectorAll("input, select, textarea, button")]
            .filter(e => e.type !== "hidden" && !e.hidden && e.offsetParent !== null)
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                         && !(e.tagName === "BUTTON" && e.textContent.trim()))
            .map(e => e.outerHTML.slice(0, 80)),
          imagesWithoutAlt: [...document.querySelectorAll("img:not([alt])")].length,
          charts: [...document.querySelectorAll("svg.chart")]
            .filter(s => s.getAttribute("role") !== "img" || !s.getAttribute("aria-label")).length,
        })"""
    )
    assert facts == {"lang": "en", "h1": 1, "unnamed": [], "imagesWithoutAlt": 0, "charts": 0}
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.evaluate("document.activeElement.blur()")  # the photographs show no focus ring


def test_a_seller_signs_in_finds_an_order_by_email_and_refunds_it(shop, page):
    job_id = delivered(shop, "lena@buyer.example")
    new_seller(page, shop, "owner@shop.example", "owner", shots=True)
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    expect(page.locator("svg.chart")).to_have_count(3)
    check_usable(page)
    photograph(page, "overview", full_page=True)

    page.get_by_role("link", name="Orders", exact=True).click()
    page.get_by_label("Find an order").fill("LENA@buyer.example")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Orders bought with the address")
    rows = page.locator("table.orders tbody tr")
    expect(rows).to_have_count(1)
    check_usable(page)
    photograph(page, "orders")
    rows.get_by_role("link", name=job_id).click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Order {job_id}")
    for image in ("The image the buyer bought, small", "The upscaled image, small"):
        shown = page.get_by_role("img", name=image)
        expect(shown).to_be_visible()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=shown.element_handle()
        )
    check_usable(page)
    photograph(page, "order", full_page=True)
    page.get_by_label("Reason").fill("the buyer bought it twice")
    page.get_by_label("Yes, refund $0.50 to lena@buyer.example").check()
    page.once("dialog", lambda dialog: dialog.accept())  # "Refund $0.50 now?"
    page.get_by_role("button", name="Refund", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("The refund is on its way")

    assert shop.refunder().refund_due() == 1
    shop.email_relay().send_due()
    intent = shop.job(job_id).stripe_payment_intent_id
    assert len(shop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data) == 1
    mail = Path(shop.stack.config.mail.folder)
    assert len(emails_of(mail, job_id, "refunded")) == 1
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_contain_text("refunded")
    expect(page.locator(".timeline")).to_contain_text("seller:owner@shop.example")
    expect(page.get_by_role("heading", name="Actions")).to_be_visible()


def test_support_is_refused_a_refund_over_its_limit_and_an_erasure(shop, page):
    job_id = delivered(shop, "max@buyer.example")
    new_seller(page, shop, "support@shop.example", "support")
    nav = page.get_by_role("navigation", name="Dashboard")
    expect(nav.get_by_role("link", name="Erasure")).to_have_count(0)
    expect(nav.get_by_role("link", name="Settings")).to_have_count(0)
    page.goto(f"{shop.stack.gateway}/dashboard/orders/{job_id}")
    expect(page.get_by_text("Support accounts refund at most $0.40")).to_be_visible()
    page.get_by_label("Reason").fill("asked")
    page.get_by_label("Yes, refund $0.50").check()
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response(re.compile(r"/refund$")) as answer:
        page.get_by_role("button", name="Refund", exact=True).click()
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("a support account refunds at most $0.40")
    photograph(page, "support-refused")
    assert shop.refunds(job_id) == [] and shop.job(job_id).status == "completed"

    answer = page.goto(f"{shop.stack.gateway}/dashboard/erase")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account may not do this")
    page.goto(f"{shop.stack.gateway}/dashboard/orders/{job_id}")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    status = page.evaluate(
        """async ([csrf, email]) => (await fetch("/dashboard/erase", {method: "POST",
             body: new URLSearchParams({csrf, email, confirm: email})})).status""",
        [csrf, "max@buyer.example"],
    )
    assert status == 403 and shop.job(job_id).customer_email == "max@buyer.example"


def test_changes_without_the_form_token_or_from_another_origin_are_refused(
    shop, page, elsewhere, caplog
):
    job_id = delivered(shop, "ines@buyer.example")
    new_seller(page, shop, "second@shop.example", "owner")
    order = f"{shop.stack.gateway}/dashboard/orders/{job_id}"
    page.goto(order)
    stolen = page.locator("input[name=csrf]").first.get_attribute("value")
    # Without the token (a form some other page made): refused.
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = '')")
    with page.expect_response(re.compile(r"/resend$")) as answer:
        page.get_by_role("button", name="Send the download link again").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Refused: this request did not come from the dashboard's own pages"
    )
    photograph(page, "csrf-refused")

    # Another origin's page (another port of this host: the same site, so the browser sends
    # the seller's cookie along) with even the form's token: its reads and changes refused.
    page.goto(elsewhere)
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    with caplog.at_level(logging.WARNING, logger="gateway.http.seller_auth"):
        # A read: the gateway refuses it (and the browser would not hand it over anyway).
        page.evaluate(
            "url => fetch(url, {credentials: 'include'}).catch(() => null)",
            f"{shop.stack.gateway}/dashboard/orders",
        )
        # A change, with the seller's cookie and even the form's token.
        page.evaluate(
            """([url, csrf]) => fetch(url, {method: "POST", mode: "no-cors",
                 credentials: "include", body: new URLSearchParams({csrf})}).catch(() => null)""",
            [f"{order}/resend", stolen],
        )
        for _ in range(200):  # neither answer reaches the other origin's page
            if len(failed) == 2:
                break
            page.wait_for_timeout(50)
    refusals = [
        (r.__dict__["method"], r.__dict__["path"], r.__dict__["seller"])
        for r in caplog.records
        if r.getMessage().startswith("dashboard request refused")
    ]
    assert ("GET", "/dashboard/orders", None) in refusals  # refused before the cookie is read
    assert ("POST", f"/dashboard/orders/{job_id}/resend", "second@shop.example") in refusals
    assert len(failed) == 2
    with page.expect_response(re.compile(r"/resend$")) as posted:
        page.evaluate(
            """([url, csrf]) => { const form = document.createElement("form");
                 form.method = "post"; form.action = url;
                 form.innerHTML = `<input name="csrf" value="${csrf}">`;
                 document.body.append(form); form.submit(); }""",
            [f"{order}/resend", stolen],
        )
    assert posted.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_contain_text("Refused")
    assert shop.outbox(job_id).count("email:completed:2") == 0

    # The seller's own page, as it is, goes through.
    page.goto(order)
    page.get_by_role("button", name="Send the download link again").click()
    expect(page.get_by_role("status")).to_contain_text("will be sent again")
    assert "email:completed:2" in shop.outbox(job_id)


def test_failed_sign_ins_lock_the_account(shop, page):
    one_time = add_account(shop, "locked@shop.example", "owner")
    for _ in range(3):
        sign_in(page, shop, "locked@shop.example", "a guess")
        expect(page.get_by_role("alert")).to_have_text(
            "The email address or the password is not right."
        )
    sign_in(page, shop, "locked@shop.example", one_time)  # the right one, too late
    expect(page.get_by_role("alert")).to_have_text(
        "Too many failed sign-ins. Try again in 15 minutes."
    )
    check_usable(page)
    photograph(page, "locked")
    expect(page.get_by_role("heading", name="Sign in to your shop")).to_be_visible()


def test_every_page_reads_well_on_a_wide_screen_and_a_phone(shop, browser):
    job_id = delivered(shop, "noor@buyer.example")
    context = browser.new_context(locale="en-US", viewport=WIDE)
    page = context.new_page()
    new_seller(page, shop, "third@shop.example", "owner")
    gateway = shop.stack.gateway
    for path, name, heading in (
        ("/dashboard/fleet", "fleet", "Fleet"),
        ("/dashboard/events", "events", "Stripe events"),
        ("/dashboard/reports", "reports", "Revenue by day"),
        ("/dashboard/accounts", "team", "Team"),
        ("/dashboard/settings", "settings", "Settings"),
        ("/dashboard/erase", "erase", "Erase a customer's data"),
        ("/dashboard/account", "account", "Your account"),
    ):
        page.goto(gateway + path)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        check_usable(page)
        photograph(page, name, full_page=name in ("settings", "fleet", "team"))
    # The keyboard: "/" goes to the search, the skip link to the content.
    page.goto(f"{gateway}/dashboard/orders")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("noor@buyer.example")
    page.keyboard.press("Enter")
    expect(page.locator("table.orders tbody tr")).to_have_count(1)

    phone = browser.new_context(locale="en-US", viewport=PHONE, is_mobile=True, has_touch=True)
    page = phone.new_page()
    sign_in(page, shop, "third@shop.example", PASSWORD)
    for path in (
        "/dashboard/",
        "/dashboard/orders",
        f"/dashboard/orders/{job_id}",
        "/dashboard/fleet",
    ):
        page.goto(gateway + path)
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 1, (path, wide)  # tables scroll inside their own box, never the page
    page.goto(f"{gateway}/dashboard/")
    photograph(page, "phone")
    phone.close()

    # Last: the made-up history's payments were never made at the emulator, so the
    # reconciliation finds each of them, and the overview lists them by kind from then on.
    page = context.new_page()
    page.goto(f"{gateway}/dashboard/reconciliation")
    page.get_by_role("button", name="Compare now").click()
    expect(page.get_by_role("status")).to_contain_text("Compared")
    check_usable(page)
    photograph(page, "reconciliation")
    page.goto(f"{gateway}/dashboard/")
    expect(page.get_by_role("link", name=re.compile("job_paid_without_payment"))).to_have_count(1)
    context.close()
