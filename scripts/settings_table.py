"""Write the README's configuration table from the settings' declarations.

    python scripts/settings_table.py           # rewrite README.md between its markers
    python scripts/settings_table.py --check   # exit 1 if README.md is not what it writes

The declarations are ``shared/settings.py``; ``tests/test_settings.py`` runs
the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.settings import markdown_table  # noqa: E402

BEGIN = "<!-- settings: written by scripts/settings_table.py from shared/settings.py -->"
END = "<!-- settings: end -->"


def with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the table."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    readme = args.readme.read_text()
    written = with_table(readme)
    if args.check:
        if written != readme:
            print(f"{args.readme} is stale: run python scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
