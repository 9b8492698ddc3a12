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
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.languages import LANGUAGES, choose
from shared import settings

# The checkout's samples/ (the demo runs from a checkout); SMI_SAMPLES_DIR elsewhere.
SAMPLES_DIR = Path(
    settings.read("SAMPLES_DIR") or Path(__file__).resolve().parent.parent / "samples"
)
# name -> (file, caption key, longest side in pixels)
PHOTOS = {
    "cat.png": ("chelsea.png", "cat", 192),
    "coffee.png": ("coffee.png", "coffee", 192),
    "astronaut.png": ("astronaut.png", "astronaut", 160),
    "grass.png": ("grass.png", "grass", 160),
}
# The demo shop's own words, in the storefront's languages (the buttons, the modal and the
# emails come from the gateway's catalogues).
SHOP_TEXT = {
    "en": {
        "title": "Demo shop",
        "intro": "Every photo here can be bought as a 4x larger version, upscaled with "
        "Real-ESRGAN. Pay with the test card {good}; {declined} is declined.",
        "language": "Language:",
        "emails": "Emails to customers are written to the demo's mail folder.",
        "cat": "Chelsea the cat",
        "coffee": "A cup of coffee",
        "astronaut": "Eileen Collins, astronaut",
        "grass": "Grass, in grey",
    },
    "fr": {
        "title": "Boutique de démonstration",
        "intro": "Chaque photo peut être achetée en version 4 fois plus grande, agrandie avec "
        "Real-ESRGAN. Payez avec la carte de test {good} ; {declined} est refusée.",
        "language": "Langue :",
        "emails": "Les e-mails aux clients sont écrits dans le dossier de courrier de la démo.",
        "cat": "Chelsea la chatte",
        "coffee": "Une tasse de café",
        "astronaut": "Eileen Collins, astronaute",
        "grass": "De l'herbe, en gris",
    },
    "de": {
        "title": "Demo-Shop",
        "intro": "Jedes Foto hier gibt es 4-mal größer zu kaufen, vergrößert mit Real-ESRGAN. "
        "Bezahlen Sie mit der Testkarte {good}; {declined} wird abgelehnt.",
        "language": "Sprache:",
        "emails": "E-Mails an Kunden werden in den Mail-Ordner der Demo geschrieben.",
        "cat": "Chelsea, die Katze",
        "coffee": "Eine Tasse Kaffee",
        "astronaut": "Eileen Collins, Astronautin",
        "grass": "Gras, in Grau",
    },
    "es": {
        "title": "Tienda de demostración",
        "intro": "Cada foto se puede comprar 4 veces más grande, ampliada con Real-ESRGAN. "
        "Pague con la tarjeta de prueba {good}; {declined} se rechaza.",
        "language": "Idioma:",
        "emails": "Los correos a los clientes se escriben en la carpeta de correo de la demo.",
        "cat": "Chelsea, la gata",
        "coffee": "Una taza de café",
        "astronaut": "Eileen Collins, astronauta",
        "grass": "Hierba, en gris",
    },
    "ja": {
        "title": "デモショップ",
        "intro": "ここの写真はすべて、Real-ESRGAN で 4 倍に拡大した版を購入できます。"
        "テストカード {good} でお支払いください。{declined} は拒否されます。",
        "language": "言語:",
        "emails": "お客様へのメールはデモのメールフォルダーに書き出されます。",
        "cat": "猫のチェルシー",
        "coffee": "一杯のコーヒー",
        "astronaut": "宇宙飛行士アイリーン・コリンズ",
        "grass": "草（グレー）",
    },
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
        # ?lang=ja shows the page (and so the buttons, modal and emails) in another language.
        lang = choose(request.query_params.get("lang"))
        text = SHOP_TEXT[lang]
        photos = [
            {"url": str(request.url_for("photo", name=name)), "caption": text[caption]}
            for name, (_, caption, _) in PHOTOS.items()
        ]
        html = _TEMPLATES.get_template("shop.html").render(
            photos=photos, gateway=gateway, lang=lang, languages=LANGUAGES, text=text
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
