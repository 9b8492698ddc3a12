"""Currencies as Stripe counts them: minor units, allowed steps, minimum charges, and display.

    >>> format_money(192, "jpy", "ja")        # amounts are always in the API's minor units
    '￥192'
    >>> format_money(192, "usd", "en")
    '$1.92'
    >>> round_to_currency(Decimal("5124.2"), "kwd")   # three decimals: the last digit is 0
    5130

Stripe's rules (https://docs.stripe.com/currencies):
- amounts are integers in the currency's smallest unit: cents for USD, yen
  for JPY (a zero-decimal currency), fils for KWD (three decimals);
- three-decimal currencies must end in 0; ISK stays two-decimal in the API
  but must be whole krónur (a multiple of 100);
- each settlement currency has a minimum charge; for the others Stripe
  converts to the account's currency, so the operator states one
  (``SMI_MINIMUM_CHARGE``).

Every amount a person reads (the modal uses the browser's ``Intl`` with the
same exponent, emails, the admin report, the CLI) goes through
``format_money``, with Babel's CLDR data for symbols and digits.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from babel.core import UnknownLocaleError
from babel.numbers import format_currency, is_currency

ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
     "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)  # fmt: skip
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
WHOLE_UNITS_ONLY = frozenset({"isk"})  # two-decimal in the API, whole units in charges

# Stripe's minimum charge per settlement currency, in major units.
MINIMUM_CHARGE = {
    "usd": "0.50", "aed": "2.00", "aud": "0.50", "bgn": "1.00", "brl": "0.50",
    "cad": "0.50", "chf": "0.50", "czk": "15.00", "dkk": "2.50", "eur": "0.50",
    "gbp": "0.30", "hkd": "4.00", "huf": "175.00", "inr": "0.50", "jpy": "50",
    "mxn": "10", "myr": "2", "nok": "3.00", "nzd": "0.50", "pln": "2.00",
    "ron": "2.00", "sek": "3.00", "sgd": "0.50", "thb": "10",
}  # fmt: skip


class CurrencyError(ValueError):
    """Raised for a currency code that is not a 3-letter ISO 4217 code we can show."""


def exponent(currency: str) -> int:
    """Digits after the point in Stripe's amounts: 0 (JPY), 2 (USD) or 3 (KWD)."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def step(currency: str) -> int:
    """The amount Stripe accepts must be a multiple of this."""
    code = currency.lower()
    if code in THREE_DECIMAL:
        return 10
    if code in WHOLE_UNITS_ONLY:
        return 100
    return 1


def round_to_currency(amount: Decimal, currency: str) -> int:
    """``amount`` (minor units) rounded up to what Stripe accepts in ``currency``."""
    unit = step(currency)
    return int((amount / unit).to_integral_value(rounding=ROUND_CEILING)) * unit


def minimum_charge(currency: str) -> int | None:
    """Stripe's minimum charge in minor units; ``None`` where Stripe converts (no fixed one)."""
    major = MINIMUM_CHARGE.get(currency.lower())
    if major is None:
        return None
    return round_to_currency(Decimal(major) * 10 ** exponent(currency), currency)


def check_currency(currency: str) -> str:
    """The lower-case code, or ``CurrencyError`` if it is not one people can be shown."""
    code = currency.lower()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise CurrencyError(f"a currency is a 3-letter ISO code, not {currency!r}")
    if not is_currency(code.upper()):
        raise CurrencyError(f"unknown currency {currency!r}")
    return code


def format_money(amount: int, currency: str, locale: str = "en") -> str:
    """``amount`` minor units of ``currency`` as people of ``locale`` write it."""
    value = Decimal(amount).scaleb(-exponent(currency))
    try:
        return str(format_currency(value, currency.upper(), locale=locale))
    except (UnknownLocaleError, ValueError):
        return str(format_currency(value, currency.upper(), locale="en"))
