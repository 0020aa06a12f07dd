"""The browser demo: GET / serves the page, /static/ its assets, /static/js/ the JS client (clients/js/)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
# clients/ is installed as a package next to http_api/, so this holds for checkouts and wheels alike.
JS_CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "js"


async def index(request: web.Request) -> web.FileResponse:
    # no-cache: revalidate (cheap, ETag) so a restarted server never shows a stale page.
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def setup_demo_routes(app: web.Application) -> None:
    """Add GET / (the demo page) and /static/ (its assets and the JS client)."""
    app.router.add_get("/", index, name="demo_index")
    # /static/js must be registered before /static: the router picks the first matching prefix.
    app.router.add_static("/static/js", JS_CLIENT_DIR, name="js_client")
    app.router.add_static("/static", STATIC_DIR, name="demo_static")
