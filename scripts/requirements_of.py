"""The requirements a built wheel declares, one per line, for ``pip install -r``.

    python scripts/requirements_of.py dist/sell_my_images-*.whl --extra s3 \
        --replace opencv-python=opencv-python-headless

Images install these under ``constraints.txt`` (what the tests ran), then the
wheel itself with ``--no-deps``: so a package can be swapped for its
equivalent (OpenCV without its GUI libraries in the gateway) and nothing
else is resolved afresh.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from email.parser import Parser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--replace", action="append", default=[], help="NAME=OTHER")
    args = parser.parse_args()
    swaps = dict(item.split("=", 1) for item in args.replace)
    with zipfile.ZipFile(args.wheel) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(name).decode())
    for requirement in metadata.get_all("Requires-Dist") or []:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra and extra.group(1) not in args.extra:
            continue
        marker = re.sub(r"\s*(and\s+)?extra\s*==\s*['\"][^'\"]+['\"]", "", marker).strip()
        marker = re.sub(r"^and\s+", "", marker)
        project = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        assert project, requirement
        spec = spec.strip()
        if project.group(0) in swaps:
            spec = swaps[project.group(0)] + spec[len(project.group(0)) :]
        print(f"{spec}; {marker}" if marker else spec)


if __name__ == "__main__":
    main()
