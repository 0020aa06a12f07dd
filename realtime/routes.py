"""STUB owned by the realtime helper: registers /v1/realtime on the app."""

from aiohttp import web


def setup_realtime_routes(app: web.Application) -> None:
    """Add the /v1/realtime WebSocket route and its shutdown hook (closes sockets with 1001)."""
