"""Every SMI_* setting is declared once (shared/settings.py); the code reads through the
declarations and the README's table is written from them: these fail when they drift."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from shared.env import ConfigError, EnvReader
from shared.settings import SETTINGS, UndeclaredSettingError, read
from upscaler.models.registry import ModelRegistry
from upscaler.worker.config import WorkerConfig

ROOT = Path(__file__).resolve().parent.parent
# Where settings are read, set or explained; the WordPress plugin's PHP constants
# (SMI_PLUGIN_FILE, ...) are not environment variables and are left out.
SCANNED = ("gateway", "upscaler", "shared", "devtools", "scripts", "deploy", "docs")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".example", ".env", ".toml", ".j2", ""}
VARIABLE = re.compile(r"\bSMI_[A-Z0-9_]*[A-Z0-9]\b")


class Recording(Mapping[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key: str, default: object = None):  # type: ignore[override]
        self.asked.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def mentioned() -> dict[str, set[Path]]:
    """Each SMI_* name in the project's code, deployment files and documents."""
    found: dict[str, set[Path]] = {}
    paths = [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("Dockerfile.*")]
    for folder in SCANNED:
        paths += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    for path in paths:
        for name in VARIABLE.findall(path.read_text(errors="replace")):
            found.setdefault(name, set()).add(path.relative_to(ROOT))
    return found


def test_the_readme_table_is_the_one_the_declarations_write():
    check = [sys.executable, str(ROOT / "scripts" / "settings_table.py"), "--check"]
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_setting_the_project_names_is_declared():
    undeclared = {
        name: sorted(map(str, paths))
        for name, paths in mentioned().items()
        # "SMI_WORKER_*" in prose, f"SMI_{prefix}_SECRET_KEY" in code: a declared name's start
        if not any(
            setting.variable == name or setting.variable.startswith(name + "_")
            for setting in SETTINGS.values()
        )
    }
    assert undeclared == {}, "declare these in shared/settings.py"


def test_the_gateway_and_the_worker_read_every_setting_declared_for_them():
    keys = {"SMI_STRIPE_TEST_SECRET_KEY": "sk_test_1", "SMI_STRIPE_TEST_WEBHOOK_SECRET": "w"}
    gateway = Recording(keys)
    GatewayConfig.from_env(gateway)
    live = Recording({"SMI_STRIPE_MODE": "live"})
    with pytest.raises(ConfigError):
        GatewayConfig.from_env(live)
    worker = Recording({})
    WorkerConfig.from_env(worker)
    ModelRegistry.from_env(worker)
    read_by = {"gateway": gateway.asked | live.asked, "worker": worker.asked}
    for process, asked in read_by.items():
        declared = {s.variable for s in SETTINGS.values() if process in s.readers}
        # Logs and failpoints are read once per process, outside its configuration.
        declared -= {"SMI_LOG_FORMAT", "SMI_FAILPOINTS"}
        assert declared - asked == set(), f"declared for the {process}, never read"
        assert {a for a in asked if a.startswith("SMI_")} - declared == set()


def test_the_commands_and_tools_read_theirs():
    sources = [
        p
        for folder in ("gateway", "shared", "upscaler", "devtools")
        for p in (ROOT / folder).rglob("*.py")
    ]
    code = "\n".join(p.read_text() for p in [*sources, ROOT / "scripts" / "images.sh"])
    for setting in SETTINGS.values():
        if set(setting.readers) - {"gateway", "worker"} or setting.name in (
            "LOG_FORMAT",
            "FAILPOINTS",
        ):
            reads = (
                rf'(read|text|items|flag|number|integer)\("{setting.name}"|\${{{setting.variable}\b'
            )
            assert re.search(reads, code), f"{setting.variable}: no command reads it"


def test_a_default_lives_in_the_declaration_alone():
    env = EnvReader({})
    assert env.number("PENDING_TIMEOUT_S") == SETTINGS["PENDING_TIMEOUT_S"].default
    assert env.text("MAIL_DIR", "computed/mail") == "computed/mail"  # worked out at start
    with pytest.raises(TypeError, match="declared"):
        env.text("CURRENCY", "eur")  # a second default at the call
    with pytest.raises(UndeclaredSettingError, match="SMI_NOT_A_SETTING"):
        env.text("NOT_A_SETTING")
    with pytest.raises(UndeclaredSettingError):
        read("NOT_A_SETTING")
    assert read("ADMIN_URL", {}) == "http://127.0.0.1:8000"
    assert read("ADMIN_URL", {"SMI_ADMIN_URL": " http://gw:8000 "}) == "http://gw:8000"


def test_values_are_held_to_their_declared_type_and_bounds():
    env = EnvReader(
        {
            "SMI_PREVIEW_SIZE": "600",
            "SMI_CHECKOUT_BURST": "2.5",
            "SMI_MARKUP": "lots",
            "SMI_AUTOMATIC_TAX": "maybe",
            "SMI_WORKER_METRICS_PORT": "",
        }
    )
    assert env.integer("PREVIEW_SIZE") == 128
    assert env.integer("CHECKOUT_BURST") == 5
    assert env.number("MARKUP") == 1.5
    assert env.flag("AUTOMATIC_TAX") is False
    assert env.optional_integer("WORKER_METRICS_PORT") is None
    assert env.problems == [
        "SMI_PREVIEW_SIZE must be within 16..512, not 600",
        "SMI_CHECKOUT_BURST must be a whole number, not 2.5",
        "SMI_MARKUP must be a number, not 'lots'",
        "SMI_AUTOMATIC_TAX must be true or false, not 'maybe'",
    ]


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=lambda s: s.name)
def test_each_declaration_is_whole(setting):
    assert setting.meaning and setting.readers and setting.group
    if setting.kind == "flag":
        assert isinstance(setting.default, bool)
    if setting.kind in ("number", "integer") and setting.default is not None:
        value = float(setting.default)
        assert setting.minimum is None or value >= setting.minimum
        assert setting.maximum is None or value <= setting.maximum
    if setting.default is None and setting.shown is None:
        assert setting.kind in ("text", "list", "url", "secret", "number")  # "none"
