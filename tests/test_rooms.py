"""docs/CONTRIBUTING.md's table of rooms says what each folder may import; the code does so."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("gateway", "shared", "upscaler", "devtools")
# The leaves at the gateway's top that every room but store/ may import.
LEAVES = {"gateway.config", "gateway.errors", "gateway.languages", "gateway.currencies"}


def rules() -> dict[str, set[str] | None]:
    """Each room's allowed imports, read from the table (``None``: anything)."""
    found: dict[str, set[str] | None] = {}
    table = (ROOT / "docs" / "CONTRIBUTING.md").read_text()
    for row in re.findall(r"^\| `([a-z]+/(?:[a-z]+/)?)`( \(top\))? \|.*\| (.*) \|$", table, re.M):
        folder, top, may = row
        if top or "anything" in may or "everything" in may:
            found[folder] = None
            continue
        allowed: set[str] = set()
        for name in re.findall(r"`([a-z.]+)`", may):
            allowed.add(name if "." in name or name in OURS else f"gateway.{name}")
        found[folder] = allowed
    return found


def imports_of(folder: Path) -> dict[str, set[Path]]:
    """Every module of ours (``gateway.money``, ``shared``) imported under ``folder``."""
    found: dict[str, set[Path]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] in OURS:
                    room = (
                        ".".join(parts[:2])
                        if parts[0] == "gateway" and len(parts) > 1
                        else parts[0]
                    )
                    found.setdefault(room, set()).add(path.relative_to(ROOT))
    return found


def test_the_table_lists_every_room_of_the_gateway():
    table = rules()
    rooms = {
        f"gateway/{p.name}/" for p in (ROOT / "gateway").iterdir() if (p / "__init__.py").exists()
    }
    assert rooms - {"gateway/static/", "gateway/templates/"} <= table.keys()


def test_each_room_imports_only_what_the_table_allows():
    wrong = {}
    for folder, allowed in rules().items():
        if allowed is None:
            continue
        own = folder.rstrip("/").replace("/", ".")
        if folder.startswith("gateway/") and own != "gateway.store":
            allowed = allowed | LEAVES
        for imported, paths in imports_of(ROOT / folder).items():
            if imported != own and imported not in allowed and own not in imported:
                wrong[f"{folder} imports {imported}"] = sorted(map(str, paths))
    assert wrong == {}, "move the code, or change the rule in docs/CONTRIBUTING.md"
