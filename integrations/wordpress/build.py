"""The WordPress plugin's zip (what a seller uploads) and its translation template.

    python integrations/wordpress/build.py zip [--output dist]  # dist/sell-my-images-0.1.0.zip
    python integrations/wordpress/build.py pot                  # languages/sell-my-images.pot
    python integrations/wordpress/build.py pot --check          # exit 1 if it is out of date

The zip holds the folder ``sell-my-images/`` (WordPress installs a plugin under its zip's
top folder), its entries sorted and dated alike, so the same sources make the same bytes.
The template lists every string of the PHP and JavaScript passed to WordPress's
translation functions (and the plugin header's name and description), with the
``translators:`` comments before them. A call whose text or text domain is not a literal
``'sell-my-images'`` string is an error: its string could not be translated.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "sell-my-images"
SLUG = "sell-my-images"
DOMAIN = "sell-my-images"
POT = PLUGIN / "languages" / f"{DOMAIN}.pot"
ZIP_DATE = (2020, 1, 1, 0, 0, 0)

# WordPress's translation functions: where the text, plural, context and domain are.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "__": ("text", "domain"),
    "_e": ("text", "domain"),
    "esc_html__": ("text", "domain"),
    "esc_html_e": ("text", "domain"),
    "esc_attr__": ("text", "domain"),
    "esc_attr_e": ("text", "domain"),
    "_x": ("text", "context", "domain"),
    "_ex": ("text", "context", "domain"),
    "esc_html_x": ("text", "context", "domain"),
    "esc_attr_x": ("text", "context", "domain"),
    "_n": ("text", "plural", "number", "domain"),
    "_nx": ("text", "plural", "number", "context", "domain"),
    "_n_noop": ("text", "plural", "domain"),
    "_nx_noop": ("text", "plural", "context", "domain"),
}
CALL = re.compile(r"(?<![\w$>:.])(" + "|".join(map(re.escape, FUNCTIONS)) + r")\s*\(")
TRANSLATORS = re.compile(r"/\*\s*translators:(.*?)\*/|//\s*translators:(.*)$", re.S | re.M)
PLACEHOLDER = re.compile(r"%(\d+\$)?[sdfu]")
HEADERS = {"Plugin Name": "Name of the plugin", "Description": "Description of the plugin"}


class BuildError(Exception):
    """Raised for a translation call the template cannot hold, or a plugin without a version."""


@dataclass
class Entry:
    text: str
    context: str | None = None
    plural: str | None = None
    places: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def plugin_files() -> list[Path]:
    """The plugin's files, sorted, as they go into the zip."""
    return sorted(path for path in PLUGIN.rglob("*") if path.is_file())


def version() -> str:
    """The plugin header's Version."""
    header = (PLUGIN / f"{SLUG}.php").read_text(encoding="utf-8")
    found = re.search(r"^\s*\*\s*Version:\s*(\S+)", header, re.M)
    if not found:
        raise BuildError(f"{SLUG}.php has no Version header")
    return found.group(1)


def build_zip(output: Path) -> Path:
    """Writes ``output/sell-my-images-VERSION.zip`` and returns its path."""
    output.mkdir(parents=True, exist_ok=True)
    target = output / f"{SLUG}-{version()}.zip"
    files = plugin_files()
    folders = sorted({parent for path in files for parent in path.parents} - set(PLUGIN.parents))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in folders:
            name = "/".join([SLUG, *folder.relative_to(PLUGIN).parts]) + "/"
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = (0o40755 << 16) | 0x10
            archive.writestr(info, b"")
        for path in files:
            info = zipfile.ZipInfo(f"{SLUG}/{path.relative_to(PLUGIN).as_posix()}", ZIP_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return target


# -- the translation template ------------------------------------------------------


def _string(source: str, at: int) -> tuple[str, int]:
    """The PHP or JavaScript string literal starting at ``at``, and where it ends."""
    quote, i, out = source[at], at + 1, []
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", quote: quote, "$": "$"}
    while i < len(source):
        char = source[i]
        if char == "\\" and i + 1 < len(source):
            nxt = source[i + 1]
            if quote == "'" and nxt not in ("'", "\\"):
                out.append("\\")  # single-quoted PHP keeps other backslashes
            else:
                out.append(escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
        elif char == quote:
            return "".join(out), i + 1
        else:
            out.append(char)
        i += 1
    raise BuildError("a string that never ends")


def _arguments(source: str, at: int) -> list[str | None]:
    """The arguments of the call whose "(" is just before ``at``: each a string literal's
    value, or None for anything else (a variable, a sum, a call)."""
    arguments: list[str | None] = []
    pieces: list[str | None] = []  # the argument so far: literals' values, None for code
    depth, i = 0, at
    while i < len(source):
        char = source[i]
        if char in "'\"":
            value, i = _string(source, i)
            pieces.append(value if depth == 0 else None)
            continue
        if char in ")]}" and depth == 0:
            if pieces:
                arguments.append(_literal(pieces))
            return arguments
        if char == "," and depth == 0:
            arguments.append(_literal(pieces))
            pieces = []
        elif not char.isspace():
            depth += (char in "([{") - (char in ")]}")
            pieces.append(None)
        i += 1
    raise BuildError("a call that never ends")


def _literal(pieces: list[str | None]) -> str | None:
    return pieces[0] if len(pieces) == 1 else None


def extract(path: Path, relative: str) -> list[Entry]:
    """The translatable strings of one file."""
    source = path.read_text(encoding="utf-8")
    comments = [(m.end(), (m.group(1) or m.group(2)).strip()) for m in TRANSLATORS.finditer(source)]
    entries = []
    for call in CALL.finditer(source):
        name, line = call.group(1), source.count("\n", 0, call.start()) + 1
        where = f"{relative}:{line}"
        values = dict(zip(FUNCTIONS[name], _arguments(source, call.end()), strict=False))
        for role in FUNCTIONS[name]:
            if role != "number" and not isinstance(values.get(role), str):
                raise BuildError(f"{where}: {name}() needs a literal {role}")
        if values["domain"] != DOMAIN:
            raise BuildError(f"{where}: {name}() has the text domain {values['domain']!r}")
        # A translators comment belongs to the call on its line or the next one.
        notes = [
            " ".join(text.split())
            for end, text in comments
            if end <= call.start() and source.count("\n", end, call.start()) <= 1
        ]
        entries.append(
            Entry(
                text=str(values["text"]),
                context=values.get("context"),
                plural=values.get("plural"),
                places=[where],
                comments=[f"translators: {note}" for note in notes[-1:]],
            )
        )
    return entries


def template() -> str:
    """The .pot file's text."""
    header = (PLUGIN / f"{SLUG}.php").read_text(encoding="utf-8")
    entries: dict[tuple[str | None, str], Entry] = {}
    for name, comment in HEADERS.items():
        value = re.search(rf"^\s*\*\s*{name}:\s*(.+)$", header, re.M)
        if value:
            text = value.group(1).strip()
            entries[(None, text)] = Entry(text, comments=[comment])
    for path in plugin_files():
        if path.suffix not in (".php", ".js"):
            continue
        for entry in extract(path, path.relative_to(PLUGIN).as_posix()):
            known = entries.setdefault((entry.context, entry.text), entry)
            if known is not entry:
                known.places += entry.places
                known.comments += [c for c in entry.comments if c not in known.comments]
    lines = [
        f"# Translation template of Sell My Images {version()}.",
        "# This file is distributed under the same license as the Sell My Images plugin.",
        'msgid ""',
        'msgstr ""',
        f'"Project-Id-Version: Sell My Images {version()}\\n"',
        '"MIME-Version: 1.0\\n"',
        '"Content-Type: text/plain; charset=UTF-8\\n"',
        '"Content-Transfer-Encoding: 8bit\\n"',
        f'"X-Domain: {DOMAIN}\\n"',
    ]
    for entry in entries.values():
        lines.append("")
        lines += [f"#. {comment}" for comment in entry.comments]
        lines += [f"#: {place}" for place in entry.places]
        if PLACEHOLDER.search(entry.text):
            lines.append("#, php-format")
        if entry.context is not None:
            lines.append(f"msgctxt {_quoted(entry.context)}")
        lines.append(f"msgid {_quoted(entry.text)}")
        if entry.plural is not None:
            lines += [f"msgid_plural {_quoted(entry.plural)}", 'msgstr[0] ""', 'msgstr[1] ""']
        else:
            lines.append('msgstr ""')
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    for plain, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\t", "\\t")):
        text = text.replace(plain, escaped)
    return f'"{text}"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    zipping = commands.add_parser("zip", help="build the plugin's zip")
    zipping.add_argument("--output", type=Path, default=Path("dist"))
    pot = commands.add_parser("pot", help="write the translation template")
    pot.add_argument("--check", action="store_true", help="only say whether it is up to date")
    args = parser.parse_args(argv)
    try:
        if args.command == "zip":
            print(build_zip(args.output))
            return 0
        text = template()
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if POT.read_text(encoding="utf-8") != text:
            print(f"{POT} is out of date: run `python {Path(__file__).name} pot`", file=sys.stderr)
            return 1
        return 0
    POT.write_text(text, encoding="utf-8")
    print(POT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
