"""A seller's WordPress sells an image through the gateway, in Chromium, end to end.

WordPress from Debian's packages on the machine's MariaDB (tests/wordpress.py), the
whole system as real processes (tests/system.py: the gateway, the Stripe emulator, a CPU
worker). The seller uploads the plugin's zip, enters the gateway's address and token,
switches "Sell high-res" on for one of a post's two images in the block editor and
publishes it; a visitor sees the button under that image only, pays on the emulator's
page and downloads the 4x image; the Sales page lists the order. Screenshots of each
step go to out/screenshots/ (the README shows some, copied to docs/).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from system import ADMIN_TOKEN, running_system
from wordpress import ADMIN_PASSWORD, ADMIN_USER, WordPressSite, build_plugin, wordpress_site

from conftest import sample
from servers import free_port
from shared.images import decode_image
from upscaler.output.images import encode_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "out" / "screenshots"
FINISH_MS = 120_000
ENGLISH_WORDS = "Buy this photo in high-res"


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


def new_page(browser: Browser) -> Page:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    return context.new_page()


def shoot(page: Page, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"wordpress-{name}.png", full_page=full_page)


def sign_in(site: WordPressSite, page: Page) -> None:
    page.goto(f"{site.url}/wp-login.php")
    page.fill("#user_login", ADMIN_USER)
    page.fill("#user_pass", ADMIN_PASSWORD)
    page.click("#wp-submit")
    page.wait_for_url(re.compile(r"/wp-admin/"))


def upload_plugin(site: WordPressSite, page: Page, archive: Path) -> None:
    """Plugins → Add New → Upload Plugin, then Activate, as a seller does."""
    page.goto(f"{site.url}/wp-admin/plugin-install.php?tab=upload")
    page.set_input_files("#pluginzip", str(archive))
    page.get_by_role("button", name="Install Now").click()
    expect(page.locator(".wrap")).to_contain_text("Plugin installed successfully.")
    page.get_by_role("link", name="Activate Plugin").click()
    expect(page.locator("#message")).to_contain_text("Plugin activated.")
    expect(page.get_by_role("link", name="Settings").first).to_be_visible()


def check(page: Page, name: str):
    return page.locator(f"[data-smi-check={name}]")


def publish_post(site: WordPressSite, page: Page, photos: list[dict]) -> tuple[int, str]:
    """A post with the two photos, the first switched to "Sell high-res"; its id and address."""
    page.goto(f"{site.url}/wp-admin/post-new.php")
    page.get_by_role("dialog").get_by_role("button", name="Close dialog").click()  # welcome
    page.get_by_role("textbox", name="Add title").fill("Two photos from the trip")
    # The images come from the media library, as the image block's own picker inserts them.
    page.evaluate(
        """(photos) => wp.data.dispatch('core/block-editor').insertBlocks(photos.map(
             (p) => wp.blocks.createBlock('core/image', {
               id: p.id, url: p.url, alt: p.alt, sizeSlug: 'full', width: 320, height: 240 })))""",
        photos,
    )
    page.locator('[data-type="core/image"] img').first.click()
    toggle = page.get_by_label("Sell high-res")
    expect(toggle).not_to_be_checked()
    toggle.check()
    expect(toggle).to_be_checked()
    toggle.scroll_into_view_if_needed()
    shoot(page, "editor")
    page.get_by_role("button", name="Publish", exact=True).click()
    page.locator(".editor-post-publish-panel").get_by_role(
        "button", name="Publish", exact=True
    ).click()
    expect(page.locator(".post-publish-panel__postpublish-header")).to_contain_text(
        "is now live", timeout=30_000
    )
    post_id = int(page.evaluate("wp.data.select('core/editor').getCurrentPostId()"))
    return post_id, str(page.evaluate("wp.data.select('core/editor').getPermalink()"))


def test_a_seller_sells_an_image_from_a_wordpress_post(browser, tmp_path):
    wordpress_port = free_port()
    wordpress_host = f"127.0.0.1:{wordpress_port}"
    database, broker = f"sqlite:///{tmp_path / 'gateway.sqlite3'}", f"filesystem://{tmp_path / 'b'}"
    with (
        running_system(tmp_path, database, broker, SMI_SOURCE_HOSTS=wordpress_host) as system,
        wordpress_site(tmp_path, wordpress_port) as site,
    ):
        system.start_worker()
        photos = [
            {**site.add_image(name, encode_image(pixels, "png"), alt), "alt": alt}
            for name, pixels, alt in (
                ("cat.png", sample("chelsea")[60:156, 150:278].copy(), "A cat"),
                ("coffee.png", sample("coffee")[100:196, 200:328].copy(), "A coffee"),
            )
        ]
        admin = new_page(browser)
        sign_in(site, admin)
        upload_plugin(site, admin, build_plugin(tmp_path / "dist"))

        # Settings → Sell My Images: the gateway's address, the English words, the token.
        settings = f"{site.url}/wp-admin/options-general.php?page=sell-my-images"
        admin.goto(settings)
        admin.get_by_label("Gateway address").fill(system.gateway)
        admin.get_by_label("English").fill(ENGLISH_WORDS)
        admin.get_by_label("Admin token").fill(ADMIN_TOKEN)
        admin.get_by_role("button", name="Save Changes").click()
        expect(admin.locator("#setting-error-settings_updated")).to_contain_text("Settings saved.")
        # The gateway answers, takes the token, but does not accept this site yet: the page
        # says what to add, with this site's own values.
        expect(check(admin, "answers")).to_have_attribute("data-smi-state", "ok")
        expect(check(admin, "token")).to_have_attribute("data-smi-state", "ok")
        expect(check(admin, "origin")).to_have_attribute("data-smi-state", "error")
        expect(check(admin, "origin")).to_contain_text(f"add {site.origin} to its")
        expect(admin.locator(".smi-env")).to_contain_text(
            f"SMI_STOREFRONT_ORIGINS=…,{site.origin}\nSMI_SOURCE_HOSTS=…,{wordpress_host}"
        )
        assert ADMIN_TOKEN not in admin.content()  # never written into a page
        # The gateway's operator adds the site; the page now says all is well.
        system.restart_gateway(0, SMI_STOREFRONT_ORIGINS=f"{system.images},{site.origin}")
        admin.goto(settings)
        expect(check(admin, "origin")).to_have_attribute("data-smi-state", "ok")
        shoot(admin, "settings", full_page=True)

        post_id, address = publish_post(site, admin, photos)
        saved = site.php("echo get_post( $data )->post_content;", post_id)
        assert saved.count('"smiSell":true') == 1

        # A visitor: the switched image has the button, the other none.
        visitor = new_page(browser)
        visitor.goto(address)
        buy = visitor.get_by_role("button", name=f"{ENGLISH_WORDS}: A cat")
        expect(buy).to_have_text(ENGLISH_WORDS)
        expect(visitor.locator(".smi-buy")).to_have_count(1)
        expect(visitor.locator('img[alt="A coffee"][data-smi-image]')).to_have_count(0)
        photo = visitor.locator('img[alt="A cat"]').bounding_box()
        under = buy.bounding_box()
        assert photo and under and under["y"] >= photo["y"] + photo["height"]  # under the photo
        shoot(visitor, "post")

        # The purchase, through to the download.
        with visitor.expect_response(re.compile(r"/api/checkout$")) as answer:
            buy.click()
        job_id = answer.value.json()["job_id"]
        dialog = visitor.get_by_role("dialog")
        expect(dialog).to_contain_text("128×96 → 512×384 pixels")
        dialog.get_by_role("button", name=re.compile(r"^Pay ")).click()
        visitor.wait_for_url(re.compile(re.escape(system.emulator) + r"/pay/"))
        visitor.fill("#card", "4242 4242 4242 4242")
        visitor.get_by_role("button", name=re.compile(r"^Pay ")).click()
        visitor.wait_for_url(re.compile(re.escape(site.url) + r"/\?p=" + str(post_id)))
        completed = visitor.locator("[role=dialog][data-smi-state=completed]")
        expect(completed).to_be_visible(timeout=FINISH_MS)
        with visitor.expect_download() as download:
            completed.get_by_role("link", name="Download 4x image").click()
        image = decode_image(Path(download.value.path()).read_bytes())
        assert image.pixels.shape == (384, 512, 3)
        shoot(visitor, "completed")

        # Sales: the order and today's totals, read by WordPress's server with the token.
        admin.goto(f"{site.url}/wp-admin/admin.php?page=smi-sales")
        order = admin.locator(f"tr[data-smi-job='{job_id}']")
        expect(order).to_contain_text("Delivered")
        expect(order).to_contain_text("0.50 USD")
        expect(order).to_contain_text("customer@example.com")  # typed on the payment page
        expect(order).to_contain_text("cat.png")
        expect(admin.locator("[data-smi-total=payments] strong")).to_have_text("1")
        expect(admin.locator("[data-smi-total=gross] strong")).to_have_text("$0.50")
        dashboard = httpx.get(f"{system.gateway}/dashboard/", timeout=30).status_code != 404
        expect(admin.locator("a.smi-dashboard")).to_have_count(1 if dashboard else 0)
        assert ADMIN_TOKEN not in admin.content()
        shoot(admin, "sales")

        # The site in French: the page's language, so the gateway's French words (the
        # seller wrote English ones only).
        site.php("update_option( 'WPLANG', 'fr_FR' );")
        french = new_page(browser)
        french.goto(address)
        assert french.get_attribute("html", "lang") == "fr-FR"
        button = french.get_by_role(
            "button", name=re.compile(r"^Acheter en haute résolution\W+A cat$")
        )
        expect(button).to_have_text("Acheter en haute résolution")
        button.click()
        expect(french.get_by_role("dialog").get_by_role("heading")).to_have_text(
            "Acheter l’image en haute résolution"
        )

        ours = [line for line in site.debug_lines() if "sell-my-images" in line]
        assert not ours, "\n".join(ours)
