"""The demo storefront: a page of sample photos with "Buy high-res" buttons.

Served at ``/`` when ``SMI_DEMO_STOREFRONT`` is on. It is what any shop
page does to sell its images: include ``/static/smi-checkout.js`` and mark
each image with ``data-smi-image``. The photos (``/demo/photos/NAME``) are
the bundled samples scaled down so that a CPU worker upscales each within
a minute.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.errors import NotFoundError

DEFAULT_SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
# name -> (file, caption, longest side in pixels)
PHOTOS = {
    "cat.png": ("chelsea.png", "Chelsea the cat", 192),
    "coffee.png": ("coffee.png", "A cup of coffee", 192),
    "astronaut.png": ("astronaut.png", "Eileen Collins, astronaut", 160),
    "grass.png": ("grass.png", "Grass, in grey", 160),
}

_TEMPLATES = Environment(
    loader=PackageLoader("devtools", "templates"), autoescape=select_autoescape()
)


@functools.cache
def demo_photo(samples_dir: Path, name: str) -> bytes:
    """A bundled sample, scaled so its longest side is at most the listed size, as PNG."""
    if name not in PHOTOS:
        raise NotFoundError("no such photo")
    filename, _, longest = PHOTOS[name]
    with Image.open(samples_dir / filename) as image:
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def storefront_routes(public_url: str, samples_dir: Path = DEFAULT_SAMPLES_DIR) -> list[Route]:
    async def page(request: Request) -> Response:
        photos = [
            {"url": f"{public_url}/demo/photos/{name}", "caption": caption}
            for name, (_, caption, _) in PHOTOS.items()
        ]
        html = _TEMPLATES.get_template("shop.html").render(photos=photos, gateway=public_url)
        return HTMLResponse(html)

    async def photo(request: Request) -> Response:
        data = demo_photo(samples_dir, request.path_params["name"])
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return [
        Route("/", page, methods=["GET"]),
        Route("/demo/photos/{name}", photo, methods=["GET"]),
    ]
