"""The storefront script in a real browser (Debian's Chromium through Playwright).

A shop on its own origin includes ``smi-checkout.js`` from the gateway's
origin; the customer buys, pays on the emulator's hosted page and comes
back to the status modal. The whole system runs as real processes with a
CPU worker. Screenshots of each final state go to ``out/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from system import BIN, System, running_system

from conftest import RABBITMQ_URL, postgres_database, purge_queues
from servers import free_port, wait_for
from shared.images import decode_image

pytestmark = pytest.mark.timeout(600)

SCREENSHOTS = Path(__file__).resolve().parent.parent / "out" / "screenshots"
FINISH_MS = 120_000


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    purge_queues()
    tmp = tmp_path_factory.mktemp("browser")
    with postgres_database() as url, running_system(tmp, url, RABBITMQ_URL) as running:
        running.start_worker()
        yield running
    purge_queues()


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


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport={"width": 1000, "height": 700})
    yield context.new_page()
    context.close()


def shop(system: System, page: Page) -> None:
    page.goto(f"{system.images}/shop.html?gateway={system.gateway}")


def start_buying(page: Page, image: str = "photo.png") -> dict:
    """Click "Buy high-res", see the price; returns the checkout the gateway answered."""
    with page.expect_response(re.compile(r"/api/checkout$")) as answer:
        page.get_by_role("button", name=f"Buy high-res: {image}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("costs $0.50")
    expect(dialog).to_contain_text("32×24 → 128×96 pixels")
    # Focus moves into the modal, on its main action.
    assert page.evaluate("document.activeElement.closest('[role=dialog]') !== null")
    return dict(answer.value.json())


def pay_on_hosted_page(system: System, page: Page, card: str) -> None:
    page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(re.compile(re.escape(system.emulator) + r"/pay/"))
    page.fill("#card", card)
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()


def modal_state(page: Page, state: str):
    return page.locator(f"[role=dialog][data-smi-state={state}]")


def test_purchase_to_completed_download(system, page):
    shop(system, page)
    start_buying(page)
    pay_on_hosted_page(system, page, "4242 4242 4242 4242")
    page.wait_for_url(re.compile(re.escape(system.images) + r"/shop\.html"))
    expect(modal_state(page, "completed")).to_be_visible(timeout=FINISH_MS)
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text("Your image is ready")
    assert page.get_attribute("#smi-status", "aria-live") == "polite"
    assert "smi_payment" not in page.url  # a reload does not reopen it
    with page.expect_download() as download:
        dialog.get_by_role("link", name="Download 4x image").click()
    image = decode_image(Path(download.value.path()).read_bytes())
    assert image.pixels.shape == (96, 128, 3)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "completed.png")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_the_buyer_key_stays_in_the_shop_s_storage_and_out_of_every_address(system, page):
    shop(system, page)
    addresses: list[str] = []
    page.on("request", lambda request: addresses.append(request.url))
    checkout = start_buying(page)
    kept = page.evaluate("JSON.parse(localStorage.getItem('smi-buyer-keys'))")
    assert [checkout["job_id"], checkout["buyer_key"]] in kept
    pay_on_hosted_page(system, page, "4242 4242 4242 4242")
    expect(modal_state(page, "completed")).to_be_visible(timeout=FINISH_MS)
    assert not [url for url in addresses if checkout["buyer_key"] in url]
    # Another browser with the job id and the Checkout Session id, but not the key:
    # the status, never the download.
    job = httpx.get(f"{system.gateway}/api/jobs/{checkout['job_id']}", timeout=30).json()
    assert job["status"] == "completed" and "download_url" not in job


def test_one_bad_image_address_costs_only_its_own_button(system, page):
    shop(system, page)
    expect(page.get_by_role("button", name="Buy high-res: photo.png")).to_be_visible()
    page.evaluate(
        """() => {
          const more = document.createElement("div");
          more.innerHTML = '<img alt="bad" data-smi-image="http://[::1">' +
            '<img alt="empty" data-smi-image="">' +
            '<img alt="script" data-smi-image="javascript:alert(1)">' +
            '<img alt="good" data-smi-image="/photo.png">';
          document.body.appendChild(more);
          window.SellMyImages.attach(more);
        }"""
    )
    expect(page.get_by_role("button", name="Buy high-res: good")).to_be_visible()
    for name in ("bad", "empty", "script"):
        expect(page.get_by_role("button", name=f"Buy high-res: {name}")).to_have_count(0)


def test_a_declined_card_shows_why_and_a_retry_pays(system, page):
    shop(system, page)
    start_buying(page)
    pay_on_hosted_page(system, page, "4000 0000 0000 0002")
    expect(page.get_by_role("alert")).to_contain_text("declined")
    page.get_by_role("link", name="Cancel and return").click()
    declined = modal_state(page, "declined")
    expect(declined).to_be_visible(timeout=15_000)
    expect(declined).to_contain_text("Your card was declined")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "declined.png")
    declined.get_by_role("button", name="Try again").click()
    page.wait_for_url(re.compile(re.escape(system.emulator) + r"/pay/"))
    page.fill("#card", "4242424242424242")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    expect(modal_state(page, "completed")).to_be_visible(timeout=FINISH_MS)


def test_cancel_says_no_charge(system, page):
    shop(system, page)
    checkout = start_buying(page)
    page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(re.compile(re.escape(system.emulator) + r"/pay/"))
    page.get_by_role("link", name="Cancel and return").click()
    cancelled = modal_state(page, "cancelled")
    expect(cancelled).to_be_visible()
    expect(cancelled).to_contain_text("No charge was made")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "cancelled.png")
    cancelled.get_by_role("button", name="Close", exact=True).click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert system.status(checkout["job_id"])["status"] == "awaiting_payment"


def test_a_failed_job_shows_the_refund(system, page):
    shop(system, page)
    checkout = start_buying(page)
    source = system.source_file(checkout["job_id"])
    intact = source.read_bytes()
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # breaks after the price was shown
    try:
        pay_on_hosted_page(system, page, "4242 4242 4242 4242")
        refunded = modal_state(page, "refunded")
        expect(refunded.get_by_role("heading")).to_have_text("Payment refunded", timeout=FINISH_MS)
        expect(refunded).to_contain_text("refunded in full")
    finally:
        source.write_bytes(intact)  # the later tests sell the same image
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "refunded.png")


def test_the_demo_command_runs_the_whole_shop(browser, tmp_path):
    port, gateway_port, emulator_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMI_")}
    command = [BIN / "smi-demo", "--port", str(port), "--gateway-port", str(gateway_port)]
    command += ["--emulator-port", str(emulator_port)]
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "left-over.sqlite3").write_text("an older run's data")
    demo = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "demo")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = ""
        assert demo.stdout is not None
        while "Press Ctrl-C" not in banner:
            line = demo.stdout.readline()
            assert line, f"smi-demo ended early:\n{banner}"
            banner += line
        shop_url = f"http://127.0.0.1:{port}/"
        assert f"open the demo shop at {shop_url}" in banner  # its own origin
        assert f"gateway:              http://127.0.0.1:{gateway_port}/" in banner
        assert "a demo starts afresh" in banner  # and says why the last run's data goes
        assert not (tmp_path / "demo" / "left-over.sqlite3").exists()
        icon = httpx.get(f"{shop_url}favicon.ico", timeout=10)  # browsers ask, page or not
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"

        context = browser.new_context(locale="en-US")
        page = context.new_page()
        page.goto(shop_url)
        page.get_by_role("button", name="Buy high-res: Chelsea the cat").click()
        expect(page.get_by_role("dialog")).to_contain_text("192×128 → 768×512 pixels")
        page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^Pay ")).click()
        page.fill("#card", "4242 4242 4242 4242")
        page.get_by_role("button", name=re.compile(r"^Pay ")).click()
        try:
            expect(modal_state(page, "processing")).to_be_visible(timeout=FINISH_MS)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "demo-processing.png")
            expect(modal_state(page, "completed")).to_be_visible(timeout=FINISH_MS)
        except AssertionError as error:
            logs = sorted((tmp_path / "demo" / "logs").glob("*.log"))
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-6000:]}" for log in logs)
            raise AssertionError(f"{error}\nthe demo's logs:\n{tails}") from None
        page.screenshot(path=SCREENSHOTS / "demo-completed.png")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download 4x image").click()
        assert decode_image(Path(download.value.path()).read_bytes()).pixels.shape == (512, 768, 3)
        # The seller's dashboard, with the one-time password the banner printed.
        printed = re.search(r"seller's dashboard: +(\S+) as (\S+), one-time password (\S+)", banner)
        assert printed, banner
        dashboard, seller, one_time = printed.groups()
        page.goto(dashboard)
        page.get_by_label("Email address").fill(seller)
        page.get_by_label("Password").fill(one_time)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("New password", exact=True).fill("the demo's own password")
        page.get_by_label("New password again").fill("the demo's own password")
        page.get_by_role("button", name="Save the password").click()
        page.get_by_role("link", name="Orders", exact=True).click()
        expect(page.locator("table.orders tbody tr")).to_have_count(1)
        expect(page.locator("table.orders")).to_contain_text("completed")
        context.close()
        mail = tmp_path / "demo" / "mail"
        wait_for(lambda: len(list(mail.glob("*-completed.eml"))) == 1, timeout=30)
        assert len(list(mail.glob("*.eml"))) == 3  # confirmation, processing, completed
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = demo.communicate(timeout=90)
    assert demo.returncode == 0, output
    assert "Stopped." in output
    # The worker stopped first and said so; the gateway was still there for its report.
    worker_log = (tmp_path / "demo" / "logs" / "worker.log").read_text()
    assert "stopping after the jobs in hand" in worker_log


def test_a_yen_shop_shows_yen_from_the_button_to_the_payment_page(browser, tmp_path):
    database, broker = f"sqlite:///{tmp_path / 'gateway.sqlite3'}", f"filesystem://{tmp_path / 'b'}"
    with running_system(tmp_path, database, broker, SMI_CURRENCY="jpy") as system:
        context = browser.new_context(locale="en-US")
        page = context.new_page()
        shop(system, page)
        with page.expect_response(re.compile(r"/api/checkout$")) as answer:
            page.get_by_role("button", name="Buy high-res: photo.png").click()
        checkout = answer.value.json()
        # Yen have no minor unit: Stripe's amount 50 is ¥50, not ¥0.50.
        assert (checkout["amount_cents"], checkout["currency_exponent"]) == (50, 0)
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("costs ¥50")
        expect(dialog.get_by_role("button", name="Pay ¥50")).to_be_visible()
        pay_on_hosted_page(system, page, "4242 4242 4242 4242")
        expect(modal_state(page, "queued")).to_be_visible(timeout=30_000)
        job_id = checkout["job_id"]
        confirmation = wait_for(lambda: system.mail.of_kind("payment_confirmation", job_id))
        assert "¥50" in confirmation[0].get_body(("plain",)).get_content()
        context.close()


def test_a_japanese_page_speaks_japanese_and_says_when_checkouts_are_limited(browser, tmp_path):
    database, broker = f"sqlite:///{tmp_path / 'gateway.sqlite3'}", f"filesystem://{tmp_path / 'b'}"
    limits = {"SMI_CHECKOUT_BURST": "1", "SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "1"}
    with running_system(tmp_path, database, broker, **limits) as system:
        context = browser.new_context(locale="en-US")  # the page's lang wins over the browser's
        page = context.new_page()
        page.goto(f"{system.images}/shop.html?gateway={system.gateway}&lang=ja")
        page.get_by_role("button", name="高解像度で購入：photo.png").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_have_attribute("data-smi-state", "quote")
        expect(dialog).to_contain_text("この画像の4倍拡大（32×24 → 128×96 ピクセル）は$0.50です。")
        expect(dialog.get_by_role("button", name="$0.50を支払う")).to_be_visible()
        dialog.get_by_role("button", name="キャンセル").click()

        # A second click within the minute: the gateway answers 429, the modal says when.
        with page.expect_response(re.compile(r"/api/checkout$")) as answer:
            page.get_by_role("button", name="高解像度で購入：photo.png").click()
        assert answer.value.status == 429 and int(answer.value.headers["retry-after"]) > 0
        expect(dialog).to_have_attribute("data-smi-state", "error")
        expect(dialog).to_contain_text("ただいまお支払いが混み合っています。")
        expect(dialog).to_contain_text(f"{answer.value.headers['retry-after']}秒後")
        page.screenshot(path=SCREENSHOTS / "japanese-rate-limited.png")
        dialog.get_by_role("button", name="閉じる").first.click()
        context.close()


def test_the_buyer_chooses_the_illustration_model_and_gets_its_upscale(browser, tmp_path):
    database, broker = f"sqlite:///{tmp_path / 'gateway.sqlite3'}", f"filesystem://{tmp_path / 'b'}"
    offers = {"SMI_OFFER_MODELS": "RealESRGAN_x4plus,RealESRGAN_x4plus_anime_6B"}
    with running_system(tmp_path, database, broker, **offers) as system:
        system.start_worker()
        context = browser.new_context(locale="en-US")
        page = context.new_page()
        shop(system, page)
        page.get_by_role("button", name="Buy high-res: photo.png").click()
        dialog = page.get_by_role("dialog")
        choices = dialog.get_by_role("group", name="Choose the upscale")
        expect(choices.get_by_role("radio")).to_have_count(2)
        expect(choices.get_by_role("radio", name=re.compile("^Photo, 4x"))).to_be_checked()
        choices.get_by_role("radio", name=re.compile("^Illustration, 4x")).check()
        expect(dialog.get_by_role("radio", name=re.compile("^Illustration"))).to_be_checked()
        with page.expect_response(re.compile(r"/api/checkout$")) as answer:
            dialog.get_by_role("button", name=re.compile(r"^Pay ")).click()
        assert answer.value.status == 201  # a checkout of the chosen model
        assert answer.value.request.post_data_json["model"] == "RealESRGAN_x4plus_anime_6B"
        page.wait_for_url(re.compile(re.escape(system.emulator) + r"/pay/"))
        page.fill("#card", "4242 4242 4242 4242")
        page.get_by_role("button", name=re.compile(r"^Pay ")).click()
        expect(modal_state(page, "completed")).to_be_visible(timeout=FINISH_MS)
        with page.expect_download() as download:
            page.get_by_role("link", name="Download 4x image").click()
        assert "RealESRGAN_x4plus_anime_6B-4x" in download.value.suggested_filename
        image = decode_image(Path(download.value.path()).read_bytes())
        assert image.pixels.shape == (96, 128, 3)
        context.close()


def test_a_preview_is_shown_before_paying_and_another_square_can_be_chosen(system, page):
    shop(system, page)
    page.get_by_role("button", name="Buy high-res: wide.png").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_have_attribute("data-smi-state", "quote")
    preview = dialog.locator(".smi-preview")
    expect(preview).to_have_attribute(
        "data-smi-preview", re.compile("^[0-9a-f]{32}$"), timeout=FINISH_MS
    )
    first = preview.get_attribute("data-smi-preview")
    after = preview.locator("img.smi-after")
    expect(after).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 512", arg=after.element_handle()
    )
    expect(preview.get_by_text("Our upscale")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "preview.png")

    # The buyer picks the top-left corner instead: a new square, a new preview.
    thumb = preview.locator(".smi-pick img").bounding_box()
    assert thumb is not None
    with page.expect_response(re.compile(r"/api/previews$")) as asked:
        page.mouse.click(thumb["x"] + 2, thumb["y"] + 2)
    assert asked.value.request.post_data_json["x"] == 0
    expect(preview).not_to_have_attribute("data-smi-preview", first, timeout=60_000)
    expect(preview.locator(".smi-pair")).to_be_visible(timeout=60_000)
    # Nothing was bought: the quote and its price are still there.
    expect(dialog).to_have_attribute("data-smi-state", "quote")
