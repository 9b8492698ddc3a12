"""Free previews: the gateway asks, a real worker makes them, identical requests share one."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from system import running_system

from gateway.images.previews import most_detailed_square
from servers import wait_for
from shared.images import check_image, decode_image
from shared.storage import Storage
from upscaler.output.images import encode_image

pytestmark = pytest.mark.timeout(300)


def test_the_most_detailed_square_is_found_on_a_small_copy():
    rng = np.random.default_rng(0)
    flat = np.full((900, 1200, 3), 120, np.uint8)
    flat[500:700, 800:1000] = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)  # texture
    x, y = most_detailed_square(flat, 128)
    assert 800 <= x <= 1000 - 128 + 8 and 500 <= y <= 700 - 128 + 8, (x, y)
    assert most_detailed_square(flat[:50, :60], 128) == (0, 0)  # smaller than the square
    # On the eighth a checkout keeps of an image (``check_image``), in the picture's pixels.
    small = check_image(encode_image(flat, "png")).small
    assert small.shape == (900 // 8, 1200 // 8)
    x, y = most_detailed_square(small, 128, 1200, 900)
    assert 800 - 8 <= x <= 1000 - 128 + 16 and 500 - 8 <= y <= 700 - 128 + 16, (x, y)


def test_storage_lists_what_is_older_than_an_age(tmp_path):
    storage = Storage(f"file://{tmp_path}")
    storage.put("previews/a/after.png", b"a")
    assert storage.older_than("previews", 3600) == []
    time.sleep(1.1)
    assert storage.older_than("previews", 1) == ["previews/a/after.png"]
    assert storage.older_than("nothing-here", 0) == []


@pytest.fixture
def system(tmp_path):
    database, broker = f"sqlite:///{tmp_path / 'gateway.sqlite3'}", f"filesystem://{tmp_path / 'b'}"
    settings = {"SMI_PREVIEW_BURST": "5", "SMI_PREVIEW_PER_CLIENT_PER_MINUTE": "6"}
    with running_system(tmp_path, database, broker, **settings) as running:
        running.start_worker()
        yield running


def ask(system, **body) -> httpx.Response:
    body = {"image_url": f"{system.images}/large.png", **body}
    return httpx.post(f"{system.gateway}/api/previews", json=body, timeout=60)


def test_a_preview_is_made_by_a_worker_and_shared_by_identical_requests(system):
    started = ask(system)
    assert started.status_code == 202, started.text
    preview = started.json()
    assert preview["status"] == "pending" and preview["scale"] == 4
    assert preview["crop"]["size"] == 96 and (
        preview["crop"]["width"],
        preview["crop"]["height"],
    ) == (96, 96)
    url = f"{system.gateway}/api/previews/{preview['preview_id']}"
    ready = wait_for(
        lambda: (r := httpx.get(url, timeout=30)).status_code == 200 and r.json(), timeout=120
    )
    assert ready["status"] == "ready"
    before = decode_image(httpx.get(f"{url}/before.png", timeout=30).content).pixels
    after = decode_image(httpx.get(f"{url}/after.png", timeout=30).content).pixels
    assert before.shape == after.shape == (384, 384, 3)
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 1  # not the same picture

    again = ask(system)  # the same image, model and square: the same preview, at once
    assert again.status_code == 200 and again.json()["preview_id"] == preview["preview_id"]
    elsewhere = ask(system, image_url=f"{system.images}/photo.png", x=3, y=2)
    assert elsewhere.status_code == 202
    assert elsewhere.json()["crop"] == {"x": 3, "y": 0, "size": 24, "width": 32, "height": 24}
    assert elsewhere.json()["preview_id"] != preview["preview_id"]


def test_previews_refuse_what_they_cannot_show(system):
    assert ask(system, model="RealESRGAN_x2plus").status_code == 400  # not offered here
    assert ask(system, x=-1, y=0).status_code == 400
    assert ask(system, image_url="http://169.254.169.254/x.png").status_code == 422
    # Two more fill the burst of five; the sixth at once is 429, with when to try again.
    assert ask(system, x=0, y=0).status_code == 202 and ask(system).status_code == 202
    limited = ask(system)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert "too many previews" in limited.json()["error"]["message"]
    missing = httpx.get(f"{system.gateway}/api/previews/{'0' * 32}", timeout=30)
    assert missing.status_code == 404
    assert httpx.get(f"{system.gateway}/api/previews/nope/after.png", timeout=30).status_code == 404
