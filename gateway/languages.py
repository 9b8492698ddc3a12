"""The buyer's language: the catalogues every customer-facing string comes from.

    >>> choose("fr-CA"), choose("pt-BR"), choose(None)
    ('fr', 'en', 'en')
    >>> translate("de", "buy.pay", price="1,92 €")
    '1,92 € bezahlen'

One JSON catalogue per language in ``gateway/static/i18n/`` serves both the
page's script (which fetches it from the gateway) and the emails: the same
keys, the same words. English is complete; every other catalogue has
every English key (a test checks), so no buyer sees a key. Stripe's hosted
page gets the same language as the Checkout Session's ``locale``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

LANGUAGES = ("en", "fr", "de", "es", "ja")
DEFAULT = "en"


def choose(requested: object) -> str:
    """The supported language for a BCP 47 tag (``fr-CA`` -> ``fr``), else English."""
    if not isinstance(requested, str):
        return DEFAULT
    base = requested.strip().lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else DEFAULT


@cache
def catalogue(language: str) -> dict[str, str]:
    """Every string of one language, by key."""
    text = (
        files("gateway").joinpath("static", "i18n", f"{choose(language)}.json").read_text("utf-8")
    )
    loaded: dict[str, str] = json.loads(text)
    return loaded


def translate(language: str, key: str, **params: object) -> str:
    """The string ``key`` in ``language`` with ``{name}`` placeholders filled."""
    template = catalogue(language).get(key) or catalogue(DEFAULT)[key]
    return template.format_map(params)
