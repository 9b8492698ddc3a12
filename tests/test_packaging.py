"""The built wheel, not the editable tree: what the images install must hold every file.

The gateway image installs the wheel; a template or migration missing from
``package-data`` works here (the editable install reads the source tree) and
fails there at import. These tests build the wheel from the committed files
and run every command's module from it.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "shared", "upscaler")


def committed_files() -> list[str]:
    """Every file git tracks (what a clean clone, and so an image build, starts from)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    )
    return [name for name in listed.stdout.split("\0") if name]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the committed tree (no build isolation:
    setuptools is in the venv and the build needs no network)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in committed_files():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(out), str(tree)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("sell_my_images-*.whl")
    return built


def test_the_wheel_holds_every_committed_package_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    wanted = [name for name in committed_files() if name.split("/")[0] in PACKAGES]
    assert len(wanted) > 50
    missing = [name for name in wanted if name not in inside]
    assert missing == []


def test_every_command_imports_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    (dist_info,) = site.glob("sell_my_images-*.dist-info")
    entry_points = configparser.ConfigParser()
    entry_points.read(dist_info / "entry_points.txt")
    commands = dict(entry_points["console_scripts"])
    assert {"smi-gateway", "smi-worker", "smi-admin", "smi-upscale"} <= set(commands)
    # The wheel's folder comes first on the path, ahead of the editable install's finder;
    # each module must also say it was loaded from there.
    script = f"""
import importlib, json, sys
sys.path.insert(0, {str(site)!r})
loaded = {{}}
for command, target in {json.dumps(commands)}.items():
    module_name, attribute = target.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute)), command
    loaded[command] = module.__file__
print(json.dumps(loaded))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert set(loaded) == set(commands)
    assert all(Path(path).is_relative_to(site) for path in loaded.values()), loaded
