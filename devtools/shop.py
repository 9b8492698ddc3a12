"""The demo shop: a page of sample photos with "Buy high-res" buttons, on its own origin.

    app = create_shop_app("http://127.0.0.1:8001")     # smi-demo serves it at --port

It is what any shop does to sell its images: include the gateway's
``/static/smi-checkout.js`` and mark each image with ``data-smi-image``;
the gateway accepts the shop's origin (``SMI_STOREFRONT_ORIGINS``) and
fetches the photos from it (``SMI_SOURCE_HOSTS``). The photos
(``/photos/NAME``) are the bundled samples scaled down so that a CPU
worker upscales each within a minute.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.languages import LANGUAGES, choose

# The checkout's samples/ (the demo runs from a checkout); SMI_SAMPLES_DIR elsewhere.
SAMPLES_DIR = Path(
    os.environ.get("SMI_SAMPLES_DIR") or Path(__file__).resolve().parent.parent / "samples"
)
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

# A framed picture: the shop's tab icon.
ICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect x="1" y="2" width="14" height="12" rx="2" fill="#1d1d1f"/>'
    b'<path d="M3 12l3.5-4 2.5 3 1.5-1.5L13 12z" fill="#fafafa"/>'
    b'<circle cx="11" cy="5.5" r="1.3" fill="#fafafa"/></svg>'
)


@functools.cache
def demo_photo(samples_dir: Path, name: str) -> bytes:
    """A bundled sample, scaled so its longest side is at most the listed size, as PNG."""
    if name not in PHOTOS:
        raise HTTPException(404, "no such photo")
    filename, _, longest = PHOTOS[name]
    if not (samples_dir / filename).is_file():
        raise HTTPException(
            404, f"the demo's photos are not in {samples_dir}: set SMI_SAMPLES_DIR to a samples/"
        )
    with Image.open(samples_dir / filename) as image:
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def create_shop_app(gateway: str, samples_dir: Path = SAMPLES_DIR) -> Starlette:
    """The shop's page and photos, selling through the gateway at ``gateway``."""

    async def page(request: Request) -> Response:
        photos = [
            {"url": str(request.url_for("photo", name=name)), "caption": caption}
            for name, (_, caption, _) in PHOTOS.items()
        ]
        # ?lang=ja shows the page (and so the buttons, modal and emails) in another language.
        lang = choose(request.query_params.get("lang"))
        html = _TEMPLATES.get_template("shop.html").render(
            photos=photos, gateway=gateway, lang=lang, languages=LANGUAGES
        )
        return HTMLResponse(html)

    async def photo(request: Request) -> Response:
        data = demo_photo(samples_dir, request.path_params["name"])
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def icon(request: Request) -> Response:
        return Response(
            ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/photos/{name}", photo, methods=["GET"], name="photo"),
            # Browsers ask for /favicon.ico whatever the page says: both get the icon.
            Route("/favicon.svg", icon, methods=["GET"]),
            Route("/favicon.ico", icon, methods=["GET"]),
        ]
    )
