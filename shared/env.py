"""Reading ``SMI_*`` settings: every problem collected, then reported at once.

    >>> env = EnvReader({"SMI_TILE": "x"})
    >>> env.number("TILE", 512)
    512
    >>> env.problems
    ["SMI_TILE must be a number, not 'x'"]

Each process (gateway, worker) builds its own frozen config with one of
these and raises ``ConfigError`` if ``problems`` is not empty.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "SMI_"


class ConfigError(ValueError):
    """Raised by a ``from_env`` with every configuration problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))
        self.problems = problems


class EnvReader:
    """Reads ``SMI_*`` values and collects problems instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def text(self, name: str, default: str) -> str:
        return self.environ.get(PREFIX + name, default).strip()

    def flag(self, name: str, default: bool) -> bool:
        raw = self.environ.get(PREFIX + name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problem(f"{PREFIX}{name} must be true or false, not {raw!r}")
        return default

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        raw = self.environ.get(PREFIX + name)
        if raw is None or not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problem(f"{PREFIX}{name} must be a number, not {raw!r}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"{minimum if minimum is not None else '-inf'}..{maximum or 'inf'}"
            self.problem(f"{PREFIX}{name} must be within {bounds}, not {raw}")
            return default
        return value

    def check(self) -> None:
        """Raise ``ConfigError`` with everything found so far."""
        if self.problems:
            raise ConfigError(self.problems)
