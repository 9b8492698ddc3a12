"""Gateway configuration and pricing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, GatewayConfig, PricingConfig
from gateway.currencies import format_money, minimum_charge, step
from gateway.money.pricing import quote_price

TEST_ENV = {
    "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_abc",
    "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_x",
}
LIVE_ENV = {
    "SMI_STRIPE_MODE": "live",
    "SMI_STRIPE_LIVE_SECRET_KEY": "sk_live_abc",
    "SMI_STRIPE_LIVE_WEBHOOK_SECRET": "whsec_live",
    "SMI_PUBLIC_URL": "https://shop.example",
    "SMI_SMTP_URL": "smtps://mailer:secret@smtp.example",
    "SMI_DOWNLOAD_SECRET": "download-secret-0123456789abcdef",
}


def test_test_mode_picks_the_test_keys_and_embedded_defaults():
    config = GatewayConfig.from_env({**TEST_ENV, "SMI_STRIPE_LIVE_SECRET_KEY": "sk_live_zzz"})
    assert (config.stripe.mode, config.stripe.secret_key) == ("test", "sk_test_abc")
    assert config.stripe.webhook_secret == "whsec_x"
    assert config.database_url.startswith("sqlite:///")
    assert config.broker_url.startswith("filesystem://")
    assert config.storage_url.startswith("file://")
    assert config.pricing.currency == "usd"


def test_live_mode_picks_the_live_keys():
    config = GatewayConfig.from_env({**LIVE_ENV, **TEST_ENV})
    assert (config.stripe.mode, config.stripe.secret_key) == ("live", "sk_live_abc")


def test_every_problem_is_listed_at_once():
    env = {
        "SMI_STRIPE_MODE": "live",
        "SMI_STRIPE_LIVE_SECRET_KEY": "sk_test_oops",
        "SMI_STRIPE_LIVE_WEBHOOK_SECRET": "",
        "SMI_STRIPE_API_BASE": "http://127.0.0.1:12111",
        "SMI_PUBLIC_URL": "http://shop.example",
        "SMI_MARKUP": "cheap",
        "SMI_CURRENCY": "dollars",
        "SMI_CHECKOUT_EXPIRES_MINUTES": "5",
    }
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(env)
    problems = "\n".join(raised.value.problems)
    assert len(raised.value.problems) == 9
    for fragment in (
        "SMI_SMTP_URL is required in live mode",
        "SMI_DOWNLOAD_SECRET is required in live mode",
        "must start with sk_live_",
        "WEBHOOK_SECRET is required and may not be empty",
        "refused in live mode",
        "must be https:// in live mode",
        "SMI_MARKUP must be a number",
        "SMI_CURRENCY: a currency is a 3-letter",
        "SMI_CHECKOUT_EXPIRES_MINUTES must be within",
    ):
        assert fragment in problems


@pytest.mark.parametrize(
    "name",
    ["SMI_ADMIN_TOKEN", "SMI_DOWNLOAD_SECRET", "SMI_STRIPE_LIVE_SECRET_KEY", "SMI_DATABASE_URL"],
)
def test_a_live_gateway_refuses_the_examples_placeholders(name):
    """deploy/env.example and the example Secret are public: a live shop started on their
    placeholders would hand out links and tokens anyone can forge."""
    placeholder = {
        "SMI_STRIPE_LIVE_SECRET_KEY": "sk_live_replace_me",
        "SMI_DATABASE_URL": "postgresql+psycopg://smi:replace-me@postgres:5432/smi",
    }.get(name, "replace-me-with-32-random-characters")
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env({**LIVE_ENV, name: placeholder})
    assert any(
        p.startswith(f"{name} still holds the example's placeholder") for p in raised.value.problems
    )
    # Test mode (the compose example's default) starts on them.
    assert GatewayConfig.from_env(
        {**TEST_ENV, "SMI_ADMIN_TOKEN": placeholder if name == "SMI_ADMIN_TOKEN" else "x" * 20}
    )


@pytest.mark.parametrize("missing", ["SMI_SMTP_URL", "SMI_DOWNLOAD_SECRET"])
def test_live_mode_needs_a_mail_server_and_a_download_secret_of_its_own(missing):
    """Live without a mail server would write emails no customer receives; without its own
    download secret, rotating the Stripe key would break every link already sent."""
    env = {key: value for key, value in LIVE_ENV.items() if key != missing}
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(env)
    assert [p for p in raised.value.problems if p.startswith(f"{missing} is required")]
    assert GatewayConfig.from_env({**TEST_ENV}).mail.smtp_url is None  # test mode: files


@pytest.mark.parametrize("mode", ["test", "live"])
def test_an_empty_webhook_secret_is_never_accepted(mode):
    env = {**(TEST_ENV if mode == "test" else LIVE_ENV)}
    env[f"SMI_STRIPE_{mode.upper()}_WEBHOOK_SECRET"] = "   "
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        GatewayConfig.from_env(env)


def test_unknown_mode_and_bad_hosts_are_refused():
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(
            {**TEST_ENV, "SMI_STRIPE_MODE": "staging", "SMI_SOURCE_HOSTS": "a.example, http://b/"}
        )
    assert len(raised.value.problems) == 2


def test_source_hosts_are_normalised():
    config = GatewayConfig.from_env({**TEST_ENV, "SMI_SOURCE_HOSTS": " Images.Example ,cdn:8080,"})
    assert config.source_hosts == ("images.example", "cdn:8080")


PRICING = PricingConfig(price_per_megapixel_cents=2.0, markup=1.5, currency="usd")


def test_price_of_a_2000_pixel_square():
    quote = quote_price(2000, 2000, PRICING)
    assert (quote.output_width, quote.output_height) == (8000, 8000)
    assert quote.amount_cents == 192  # 64 MP x 2 cents x 1.5
    assert quote.description == "2000x2000 → 8000x8000 pixels"


def test_small_images_cost_stripes_minimum():
    assert quote_price(10, 10, PRICING).amount_cents == 50


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_price_never_falls_below_the_minimum_and_grows_with_size(width, height):
    quote = quote_price(width, height, PRICING)
    assert quote.amount_cents >= 50
    assert quote_price(width + 1, height, PRICING).amount_cents >= quote.amount_cents


def test_empty_images_have_no_price():
    with pytest.raises(ValueError):
        quote_price(0, 10, PRICING)


@pytest.mark.parametrize(
    ("currency", "amount", "shown"),
    [
        ("usd", 192, "$1.92"),  # cents
        ("eur", 192, "€1.92"),
        ("jpy", 192, "¥192"),  # zero-decimal: Stripe's amount is yen
        ("krw", 192, "₩192"),
        ("kwd", 1920, "KWD1.920"),  # three decimals, rounded to ten fils
        ("isk", 19200, "ISK192"),  # two-decimal in the API, whole krónur only
    ],
)
def test_a_2000_pixel_square_in_each_kind_of_currency(currency, amount, shown):
    pricing = PricingConfig(2.0, 1.5, currency, minimum_charge(currency) or 1)
    if currency in ("kwd", "isk"):  # the same price in their smallest units
        pricing = PricingConfig(2.0 * amount / 192, 1.5, currency, 1)
    quote = quote_price(2000, 2000, pricing)
    assert quote.amount_cents == amount
    assert quote.amount_cents % step(currency) == 0
    assert format_money(quote.amount_cents, currency) == shown


def test_amounts_are_rounded_up_to_what_stripe_takes():
    assert quote_price(10, 10, PricingConfig(2.0, 1.5, "kwd", 101)).amount_cents == 110
    assert quote_price(10, 10, PricingConfig(2.0, 1.5, "isk", 1)).amount_cents == 100
    assert quote_price(10, 10, PricingConfig(2.0, 1.5, "jpy", 50)).amount_cents == 50


def test_each_currency_gets_stripes_minimum_or_must_be_given_one():
    assert GatewayConfig.from_env({**TEST_ENV, "SMI_CURRENCY": "JPY"}).pricing.minimum_cents == 50
    assert GatewayConfig.from_env({**TEST_ENV, "SMI_CURRENCY": "gbp"}).pricing.minimum_cents == 30
    assert GatewayConfig.from_env({**TEST_ENV, "SMI_CURRENCY": "huf"}).pricing.minimum_cents == (
        17500
    )
    with pytest.raises(ConfigError, match="SMI_MINIMUM_CHARGE: Stripe has no fixed minimum"):
        GatewayConfig.from_env({**TEST_ENV, "SMI_CURRENCY": "php"})
    given = {**TEST_ENV, "SMI_CURRENCY": "php", "SMI_MINIMUM_CHARGE": "3000"}
    assert GatewayConfig.from_env(given).pricing.minimum_cents == 3000
    with pytest.raises(ConfigError, match="unknown currency"):
        GatewayConfig.from_env({**TEST_ENV, "SMI_CURRENCY": "xyz"})


def test_amounts_read_as_each_language_writes_them():
    assert format_money(192, "jpy", "ja") == "￥192"
    assert format_money(192, "usd", "fr") == "1,92\xa0$US"
    assert format_money(123456, "eur", "de") == "1.234,56\xa0€"
    assert format_money(192, "usd", "no-such-locale") == "$1.92"


def test_a_price_never_falls_below_the_measured_gpu_cost(tmp_path):
    bench = tmp_path / "bench.json"  # smi-bench --json: 0.01 input MP/s is 6.25 s per output MP
    bench.write_text(json.dumps({"model": "RealESRGAN_x4plus", "input_megapixels_per_s": 0.01}))
    env = {
        **TEST_ENV,
        "SMI_PRICE_PER_MEGAPIXEL_CENTS": "0.1",
        "SMI_GPU_COST_PER_HOUR": "360",  # 0.1 cent a second: 0.625 cents per output MP
        "SMI_BENCH_FILES": str(bench),
    }
    pricing = GatewayConfig.from_env(env).pricing
    assert pricing.cost_per_megapixel("RealESRGAN_x4plus") == pytest.approx(0.625)
    assert pricing.price_for("RealESRGAN_x4plus") == pytest.approx(0.625)
    # 2000x2000 -> 64 MP: 64 x 0.625 x 1.5 = 60 cents, not 64 x 0.1 x 1.5 = 9.6 (the minimum 50)
    assert quote_price(2000, 2000, pricing).amount_cents == 60
    cheaper = GatewayConfig.from_env({**env, "SMI_GPU_COST_PER_HOUR": "36"}).pricing
    assert cheaper.price_for("RealESRGAN_x4plus") == pytest.approx(0.1)  # the price is above cost

    with pytest.raises(ConfigError, match="needs a smi-bench --json figure"):
        GatewayConfig.from_env({**TEST_ENV, "SMI_GPU_COST_PER_HOUR": "360"})
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a smi-bench --json report"):
        GatewayConfig.from_env({**env, "SMI_BENCH_FILES": str(tmp_path / "bad.json")})
