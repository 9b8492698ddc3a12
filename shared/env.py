"""Reading ``SMI_*`` settings: every problem collected, then reported at once.

    >>> env = EnvReader({"SMI_WORKER_OVERLAP": "x", "SMI_PREVIEW_SIZE": "9000"})
    >>> env.integer("WORKER_OVERLAP"), env.integer("PREVIEW_SIZE"), env.number("MARKUP")
    (32, 128, 1.5)
    >>> for problem in env.problems:
    ...     print(problem)
    SMI_WORKER_OVERLAP must be a number, not 'x'
    SMI_PREVIEW_SIZE must be within 16..512, not 9000

Each setting is read through its declaration in ``shared/settings.py``: the
default and the bounds are there, once, and a name not declared there is a
programming error (``UndeclaredSettingError``). Each process (gateway,
worker) builds its own frozen config with one of these and raises
``ConfigError`` if ``problems`` is not empty.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.settings import PREFIX, Setting, declared


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

    def _raw(self, setting: Setting) -> str:
        return self.environ.get(setting.variable, "").strip()

    def text(self, name: str, computed: str | None = None) -> str:
        """The value; unset or empty, the declared default, or ``computed`` for a setting
        whose default is worked out at start (declared without one), else ``""``."""
        setting = declared(name)
        if computed is not None and setting.default is not None:
            raise TypeError(f"{setting.variable}'s default is declared; pass none here")
        if raw := self._raw(setting):
            return raw
        if setting.default is not None:
            return str(setting.default)
        return computed or ""

    def items(self, name: str) -> tuple[str, ...]:
        """A comma-separated list, its entries stripped, empty ones left out."""
        return tuple(entry.strip() for entry in self.text(name).split(",") if entry.strip())

    def flag(self, name: str) -> bool:
        setting = declared(name)
        assert isinstance(setting.default, bool), f"{setting.variable} is not a flag"
        raw = self._raw(setting).lower()
        if not raw:
            return setting.default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problem(f"{setting.variable} must be true or false, not {raw!r}")
        return setting.default

    def optional_number(self, name: str) -> float | None:
        """The value, or the declared default (``None`` where it has none) when unset,
        unreadable or out of its declared bounds (the last two are problems)."""
        setting = declared(name)
        assert setting.kind in ("number", "integer"), f"{setting.variable} is not a number"
        default = None if setting.default is None else float(setting.default)
        raw = self._raw(setting)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problem(f"{setting.variable} must be a number, not {raw!r}")
            return default
        low, high = setting.minimum, setting.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            self.problem(f"{setting.variable} must be within {bounds:s}, not {raw}")
            return default
        if setting.kind == "integer" and not value.is_integer():
            self.problem(f"{setting.variable} must be a whole number, not {raw}")
            return default
        return value

    def number(self, name: str) -> float:
        value = self.optional_number(name)
        assert value is not None, f"{PREFIX}{name} has no declared default"
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self.optional_number(name)
        return None if value is None else int(value)

    def integer(self, name: str) -> int:
        return int(self.number(name))

    def check(self) -> None:
        """Raise ``ConfigError`` with everything found so far."""
        if self.problems:
            raise ConfigError(self.problems)
