"""Write constraints.txt: every package of the development venv at the version the tests ran.

    make lock        (after changing dependencies in pyproject.toml)

``make setup`` installs under it, and so do both images, so what runs in a
container is what was tested. The gateway image swaps OpenCV for its
headless build: pinned here at the same version.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

OWN = "sell-my-images"
HEADLESS = ("opencv-python", "opencv-python-headless")


def main() -> None:
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() == OWN or dist.read_text("direct_url.json"):
            continue  # ourselves, and anything installed from a folder or URL
        versions[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    if HEADLESS[0] in versions:
        versions.setdefault(HEADLESS[1], versions[HEADLESS[0]])
    lines = [
        "# What the tests ran: `make lock` writes this from the development venv",
        "# (scripts/lock.py); `make setup` and both images install under it.",
        *(f"{name}=={version}" for name, version in sorted(versions.items())),
    ]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("constraints.txt")
    out.write_text("\n".join(lines) + "\n")
    print(f"{out}: {len(versions)} packages")


if __name__ == "__main__":
    main()
