"""The WordPress plugin (integrations/wordpress/) inside a real WordPress, without a browser.

Its zip, its translation template, its coding standard (Debian's PHP_CodeSniffer), and
what it does to pages: which images each rule marks for sale, the [smi_buy] button, the
script loaded only where something is for sale, how settings are cleaned, what the
gateway checks say when there is no gateway, and an uninstall that leaves no option.
The whole purchase in a browser is tests/test_wordpress.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wordpress import WordPressSite, build_plugin, wordpress_site

from gateway.currencies import THREE_DECIMAL, ZERO_DECIMAL
from gateway.languages import LANGUAGES, catalogue
from servers import free_port

INTEGRATION = Path(__file__).resolve().parent.parent / "integrations" / "wordpress"
PLUGIN = INTEGRATION / "sell-my-images"
BUILD = INTEGRATION / "build.py"
GATEWAY = "https://gateway.example"

pytestmark = pytest.mark.timeout(300)


def php_constant(path: Path, expression: str) -> Any:
    """A class constant of the plugin, read by PHP itself (no WordPress needed for these)."""
    code = f"define( 'ABSPATH', '/' ); require '{path}'; echo json_encode( {expression} );"
    done = subprocess.run(["php", "-r", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- the package -------------------------------------------------------------------


def test_the_zip_holds_the_plugin_folder_and_the_same_sources_make_the_same_bytes(tmp_path):
    first = build_plugin(tmp_path / "a")
    second = build_plugin(tmp_path / "b")
    assert first.name == "sell-my-images-0.1.0.zip"
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert all(name.startswith("sell-my-images/") for name in names)
    expected = {
        f"sell-my-images/{path.relative_to(PLUGIN).as_posix()}"
        for path in PLUGIN.rglob("*")
        if path.is_file()
    }
    assert {name for name in names if not name.endswith("/")} == expected
    for needed in ("sell-my-images.php", "uninstall.php", "readme.txt", "assets/editor.js"):
        assert f"sell-my-images/{needed}" in names
    header = zipfile.ZipFile(first).read("sell-my-images/sell-my-images.php").decode()
    readme = zipfile.ZipFile(first).read("sell-my-images/readme.txt").decode()
    # The versions it declares are the ones the tests run (Debian 12's WordPress 6.1).
    for text in (header, readme):
        assert re.search(r"Requires at least:\s+6\.1\b", text)
        assert re.search(r"Requires PHP:\s+7\.4\b", text)
    assert "Text Domain:       sell-my-images" in header


def test_the_translation_template_is_up_to_date_and_every_string_has_our_text_domain():
    done = subprocess.run(
        [sys.executable, str(BUILD), "pot", "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    template = (PLUGIN / "languages" / "sell-my-images.pot").read_text()
    assert 'msgid "Sell high-res"' in template  # the editor's JavaScript
    assert 'msgid "Sales"' in template
    assert "#. translators: %s: a CSS class name." in template


def test_a_string_without_our_text_domain_is_refused(tmp_path, monkeypatch):
    sys.path.insert(0, str(INTEGRATION))
    try:
        import build
    finally:
        sys.path.remove(str(INTEGRATION))
    source = tmp_path / "bad.php"
    source.write_text("<?php\necho esc_html__( 'Hello', 'other-plugin' );\n")
    with pytest.raises(build.BuildError, match=r"bad.php:2: esc_html__\(\) has the text domain"):
        build.extract(source, "bad.php")
    source.write_text("<?php\necho __( $words, 'sell-my-images' );\n")
    with pytest.raises(build.BuildError, match="needs a literal text"):
        build.extract(source, "bad.php")


def test_the_button_s_default_words_are_the_gateway_s_catalogues():
    defaults = php_constant(
        PLUGIN / "includes" / "class-smi-options.php", "SMI_Options::BUTTON_DEFAULTS"
    )
    assert defaults == {language: catalogue(language)["buy.button"] for language in LANGUAGES}


def test_the_sales_page_counts_currencies_as_the_gateway_does():
    page = PLUGIN / "includes" / "class-smi-sales-page.php"
    assert set(php_constant(page, "SMI_Sales_Page::ZERO_DECIMAL")) == ZERO_DECIMAL
    assert set(php_constant(page, "SMI_Sales_Page::THREE_DECIMAL")) == THREE_DECIMAL


# -- coding standards --------------------------------------------------------------


def phpcs(*args: str, command: str = "phpcs") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command.split(), "-q", "--report=full", *args],
        capture_output=True,
        text=True,
        cwd=INTEGRATION,
    )


def test_the_php_passes_what_debian_s_php_codesniffer_checks_of_wordpress_s_standards(tmp_path):
    assert shutil.which("phpcs"), "Debian's php-codesniffer is missing: run `make wordpress`"
    done = phpcs("--standard=phpcs-debian.xml")
    assert done.returncode == 0, done.stdout + done.stderr
    # The rules bite: short arrays, spaces for indentation, no spaces inside parentheses.
    bad = tmp_path / "bad.php"
    bad.write_text("<?php\nfunction smi_bad() {\n    return foo([1]);\n}\n")
    done = phpcs("--standard=phpcs-debian.xml", str(bad))
    assert done.returncode != 0
    for sniff in ("DisallowShortArraySyntax", "DisallowSpaceIndent", "FunctionCallSignature"):
        assert sniff in done.stdout


# -- in WordPress ------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[WordPressSite]:
    tmp = tmp_path_factory.mktemp("wordpress-plugin")
    with wordpress_site(tmp) as running:
        running.install_plugin(build_plugin(tmp / "dist"))
        running.php(
            "$done = activate_plugin( 'sell-my-images/sell-my-images.php' ); "
            "if ( is_wp_error( $done ) ) { exit( 1 ); }"
        )
        yield running
        ours = [line for line in running.debug_lines() if "sell-my-images" in line]
        assert not ours, "\n".join(ours)


@pytest.fixture(scope="module")
def photos(site) -> list[dict[str, Any]]:
    from conftest import sample
    from upscaler.output.images import encode_image

    return [
        site.add_image(f"{name}.png", encode_image(sample(name)[:40, :48].copy(), "png"), alt)
        for name, alt in (("chelsea", "A cat"), ("coffee", "A coffee"))
    ]


def image_block(photo: dict[str, Any], **attrs: Any) -> str:
    """An image block as the editor saves it."""
    attributes = {"id": photo["id"], "sizeSlug": "full", **attrs}
    classes = " ".join(["wp-block-image", "size-full", attrs.get("className", "")]).strip()
    return (
        f"<!-- wp:image {json.dumps(attributes)} -->\n"
        f'<figure class="{classes}"><img src="{photo["url"]}" alt="{photo.get("alt", "")}" '
        f'class="wp-image-{photo["id"]}"/></figure>\n<!-- /wp:image -->'
    )


RENDER = """
update_option( 'smi_settings', $data['settings'] );
if ( 'post' !== $data['type'] && 'page' !== $data['type'] ) {
    register_post_type( $data['type'], array( 'public' => true ) );
}
$id = wp_insert_post( array( 'post_type' => $data['type'], 'post_status' => 'publish',
    'post_title' => 'Photos', 'post_content' => $data['content'] ), true );
if ( is_wp_error( $id ) ) { exit( 1 ); }
global $post;
$post = get_post( $id );
setup_postdata( $post );
$html = apply_filters( 'the_content', $post->post_content );
do_action( 'wp_enqueue_scripts' );
ob_start();
wp_print_footer_scripts();
$script = ob_get_clean();
wp_delete_post( $id, true );
echo wp_json_encode( array( 'html' => $html, 'script' => $script ) );
"""


def render(
    site: WordPressSite, content: str, post_type: str = "post", **settings: Any
) -> dict[str, Any]:
    """A post's content as a visitor gets it, and the scripts in its footer."""
    settings = {"gateway_url": GATEWAY, **settings}
    data = {"settings": settings, "content": content, "type": post_type}
    return dict(site.php_json(RENDER, data))


def marked(html: str) -> list[str]:
    """The addresses of the images marked for sale, in order."""
    return re.findall(r'<img\b[^>]*\sdata-smi-image="([^"]+)"', html)


def test_only_the_image_switched_on_in_the_editor_is_for_sale(site, photos):
    cat, coffee = photos
    content = image_block(cat, smiSell=True) + "\n\n" + image_block(coffee)
    page = render(site, content, images="marked")
    assert marked(page["html"]) == [cat["url"]]
    assert "data-smi-label" not in page["html"]  # the gateway's words for the button
    # The gateway's script, told where the gateway is, in the page's footer.
    script = re.search(r"<script\b[^>]*smi-checkout[^>]*>", page["script"])
    assert script, page["script"]
    assert f'data-smi-gateway="{GATEWAY}"' in script.group(0)
    assert f"src='{GATEWAY}/static/smi-checkout.js'" in script.group(0)
    assert "img[data-smi-image]+.smi-buy{display:block" in page["script"]  # under the image


def test_a_page_that_sells_nothing_does_not_load_the_script(site, photos):
    page = render(site, image_block(photos[0]) + image_block(photos[1]), images="marked")
    assert marked(page["html"]) == []
    assert "smi-checkout" not in page["script"] and ".smi-buy" not in page["script"]


def test_every_image_of_posts_and_pages_but_not_of_other_types(site, photos):
    cat, coffee = photos
    classic = f'<p><img src="{coffee["url"]}" alt="" class="alignnone wp-image-{coffee["id"]}"></p>'
    for post_type in ("post", "page"):
        page = render(site, image_block(cat) + classic, post_type, images="all")
        assert marked(page["html"]) == [cat["url"], coffee["url"]], post_type
    other = render(site, image_block(cat) + classic, "smi_portfolio", images="all")
    assert marked(other["html"]) == []
    assert "smi-checkout" not in other["script"]


def test_an_excerpt_sells_nothing(site, photos):
    answer = site.php_json(
        """
        update_option( 'smi_settings', array( 'gateway_url' => 'https://gw.example',
            'images' => 'all' ) );
        $id = wp_insert_post( array( 'post_status' => 'publish', 'post_title' => 'Photos',
            'post_content' => $data ) );
        global $post;
        $post = get_post( $id );
        setup_postdata( $post );
        $excerpt = get_the_excerpt();
        do_action( 'wp_enqueue_scripts' );
        wp_delete_post( $id, true );
        echo wp_json_encode( array( $excerpt, wp_script_is( 'smi-checkout', 'enqueued' ) ) );
        """,
        f'<p>A photo.</p><p><img src="{photos[0]["url"]}" alt=""></p>',
    )
    assert answer == ["A photo.", False]


def test_images_with_the_seller_s_class_on_the_block_or_the_image(site, photos):
    cat, coffee = photos
    by_block = image_block(cat, className="for-sale")
    by_image = f'<img src="{coffee["url"]}" alt="" class="big for-sale">'
    not_this = f'<img src="{coffee["url"]}" alt="" class="for-sale-not">'
    page = render(site, by_block + by_image + not_this, images="class", css_class="for-sale")
    assert marked(page["html"]) == [cat["url"], coffee["url"]]


def test_the_full_size_file_is_sold_not_the_size_on_the_page(site, photos):
    cat = photos[0]
    resized = image_block(cat, smiSell=True).replace(cat["url"], cat["url"][:-4] + "-24x20.png")
    assert marked(render(site, resized)["html"]) == [cat["url"]]


def test_the_seller_s_words_for_the_page_s_language(site, photos):
    labels = {"en": 'Buy "this" <print>', "fr": "Acheter le tirage"}
    content = image_block(photos[0], smiSell=True)
    english = render(site, content, labels=labels)["html"]
    assert 'data-smi-label="Buy &quot;this&quot; &lt;print&gt;"' in english
    # WordPress reads its locale once per request: the next one speaks French.
    site.php("update_option( 'WPLANG', 'fr_FR' );")
    try:
        french = render(site, content, labels=labels)["html"]
        japanese = render(site, content, labels={"ja": "購入"})["html"]
    finally:
        site.php("delete_option( 'WPLANG' );")
    assert 'data-smi-label="Acheter le tirage"' in french
    # No words of the seller's for French: the gateway's catalogue decides.
    assert "data-smi-label" not in japanese


def test_the_shortcode_makes_a_button_for_any_image_address(site):
    page = render(site, '[smi_buy src="https://photos.example/a.jpg?w=1&h=2"]')
    assert page["html"].strip() == (
        '<button type="button" class="smi-buy-button wp-element-button" '
        'data-smi-image="https://photos.example/a.jpg?w=1&#038;h=2">Buy high-res</button>'
    )
    assert "smi-checkout.js" in page["script"]
    labelled = render(site, '[smi_buy src="https://photos.example/a.jpg" label="<b>Get it</b>"]')
    assert ">&lt;b&gt;Get it&lt;/b&gt;</button>" in labelled["html"]
    for bad in ('[smi_buy src="javascript:alert(1)"]', "[smi_buy]"):
        page = render(site, bad)
        assert "<button" not in page["html"] and "smi-checkout" not in page["script"], bad


def test_without_a_gateway_nothing_is_marked(site, photos):
    content = image_block(photos[0], smiSell=True) + '[smi_buy src="https://photos.example/a.jpg"]'
    page = render(site, content, gateway_url="", images="all")
    assert "data-smi-image" not in page["html"] and "<button" not in page["html"]
    assert "smi-checkout" not in page["script"]


def test_settings_are_cleaned_and_a_bad_address_keeps_the_saved_one(site):
    answer = site.php_json(
        """
        update_option( 'smi_settings', array( 'gateway_url' => 'https://gw.example' ) );
        $clean = SMI_Options::sanitize_settings( $data );
        echo wp_json_encode( array(
            'clean' => $clean,
            'again' => SMI_Options::sanitize_settings( $clean ),
            'errors' => wp_list_pluck( get_settings_errors( 'smi_settings' ), 'code' ),
        ) );
        """,
        {
            "gateway_url": "javascript:alert(1)",
            "images": "everything",
            "css_class": 'for "sale',
            "labels": {"en": "  <b>Buy</b> it ", "fr": "", "xx": "no"},
            "unknown": "dropped",
        },
    )
    assert answer["clean"] == {
        "gateway_url": "https://gw.example",
        "images": "marked",
        "css_class": "forsale",
        "labels": {"en": "Buy it"},
    }
    assert answer["again"] == answer["clean"]
    assert answer["errors"] == ["smi_gateway_url"]


def test_an_empty_token_field_keeps_the_token_and_forget_removes_it(site):
    answer = site.php_json(
        """
        update_option( 'smi_admin_token', 'saved-token-0123456789' );
        echo wp_json_encode( array(
            SMI_Options::sanitize_token( array( 'token' => '' ) ),
            SMI_Options::sanitize_token( array( 'token' => ' new-token-0123456789 ' ) ),
            SMI_Options::sanitize_token( array( 'token' => '', 'forget' => '1' ) ),
        ) );
        """
    )
    assert answer == ["saved-token-0123456789", "new-token-0123456789", ""]


def test_the_checks_say_why_when_the_gateway_does_not_answer(site):
    closed = f"http://127.0.0.1:{free_port()}"
    answer = site.php_json(
        """
        update_option( 'smi_settings', array( 'gateway_url' => $data ) );
        update_option( 'smi_admin_token', 'a-token-0123456789' );
        $checks = SMI_Gateway::check();
        $sales = SMI_Gateway::admin_get( '/admin/jobs' );
        update_option( 'smi_settings', array() );
        $none = SMI_Gateway::check();
        echo wp_json_encode( array(
            'answers' => $checks['answers']->get_error_message(),
            'token' => is_wp_error( $checks['token'] ),
            'sales' => $sales->get_error_message(),
            'none' => $none['answers']->get_error_code(),
        ) );
        """,
        closed,
    )
    assert "Failed to connect" in answer["answers"] or "refused" in answer["answers"]
    assert answer["token"] is True

    # The same error from both calls (cURL's own "after N ms" differs between them).
    def untimed(message: str) -> str:
        return re.sub(r"after \d+ ms", "after N ms", message)

    assert untimed(answer["sales"]) == untimed(answer["answers"])
    assert answer["none"] == "smi_no_gateway"


def test_only_administrators_see_the_plugin_s_pages(site):
    answer = site.php_json(
        """
        update_option( 'smi_settings', array() );
        $editor = wp_insert_user( array(
            'user_login' => 'ed', 'user_pass' => wp_generate_password(), 'role' => 'editor' ) );
        $pages = array();
        foreach ( array( 'editor' => $editor, 'admin' => 1 ) as $who => $id ) {
            wp_set_current_user( $id );
            ob_start();
            SMI_Sales_Page::render();
            $pages[ $who ] = ob_get_clean();
        }
        wp_delete_user( $editor );
        echo wp_json_encode( $pages );
        """
    )
    assert answer["editor"] == ""
    # An administrator without a gateway is sent to the settings.
    assert "options-general.php?page=sell-my-images" in answer["admin"]


def test_uninstalling_removes_the_options(tmp_path):
    with wordpress_site(tmp_path) as site:
        site.install_plugin(build_plugin(tmp_path / "dist"))
        answer = site.php_json(
            """
            activate_plugin( 'sell-my-images/sell-my-images.php' );
            update_option( 'smi_settings', array( 'gateway_url' => 'https://gw.example' ) );
            update_option( 'smi_admin_token', 'a-token-0123456789' );
            deactivate_plugins( 'sell-my-images/sell-my-images.php' );
            uninstall_plugin( 'sell-my-images/sell-my-images.php' );
            wp_cache_flush();
            echo wp_json_encode( array(
                get_option( 'smi_settings', 'gone' ), get_option( 'smi_admin_token', 'gone' ) ) );
            """
        )
        assert answer == ["gone", "gone"]
