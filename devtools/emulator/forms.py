"""Stripe's form encoding: ``line_items[0][price_data][currency]=usd`` into nested data."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class FormError(ValueError):
    """Raised when a form key is not Stripe-style bracket notation."""


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest bracketed keys into dicts; dicts whose keys are 0..n-1 become lists.

    ``expand[]=a&expand[]=b`` appends, as Stripe's clients send arrays.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise FormError(f"malformed parameter name {key!r}")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for part, following in itertools.pairwise(path):
            if following == "":
                node = node.setdefault(part, {"__append__": []})
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FormError(f"parameter {key!r} conflicts with an earlier value")
        last = path[-1]
        if last == "":
            node["__append__"].append(value)
        else:
            node[last] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if set(node) == {"__append__"}:
        return list(node["__append__"])
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(i)] for i in indices]
    return converted
