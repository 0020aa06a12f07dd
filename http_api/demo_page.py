"""The browser demo: GET / serves the page, /static/ its assets, /static/js/ the JS client (clients/js/).

Every file goes out with headers that keep other sites from framing it or the browser from guessing its
type; the page also carries its Content-Security-Policy (this header is its one home). A file that is not
there is a JSON 404 (the error middleware's), never an empty body.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from http_api.errors import APIError, Handler

STATIC_DIR = Path(__file__).resolve().parent / "static"
# clients/ is installed as a package next to http_api/, so this holds for checkouts and wheels alike.
JS_CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "js"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
PAGE_HEADERS = {
    **FILE_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # no-cache: revalidate (cheap, ETag) so a restarted server never shows a stale page.
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


def static_files(directory: Path) -> Handler:
    """GET {prefix}/{path}: a file under `directory` (nothing outside it, nothing hidden), else a 404."""
    root = directory.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        try:
            target = (root / relative).resolve()
            found = target.is_relative_to(root) and target.is_file()
        except (OSError, ValueError):  # a NUL byte, a lone surrogate, a name too long
            found = False
        if not found or any(part.startswith(".") for part in Path(relative).parts):
            raise APIError(f"There is no file at {request.path}", status=404, code="not_found")
        return web.FileResponse(target, headers=FILE_HEADERS)

    return serve


def setup_demo_routes(app: web.Application) -> None:
    """Add GET / (the demo page) and /static/ (its assets and the JS client)."""
    app.router.add_get("/", index, name="demo_index")
    # /static/js must be registered before /static: the router picks the first route that matches.
    app.router.add_get("/static/js/{path:.+}", static_files(JS_CLIENT_DIR), name="js_client")
    app.router.add_get("/static/{path:.+}", static_files(STATIC_DIR), name="demo_static")
