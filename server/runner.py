"""Serving the app until SIGINT or SIGTERM, then shutting it down gracefully.

This is web.run_app but for one thing: a request that aiohttp cannot parse (a bad Content-Length, a bad
method, a 100 KB header) never reaches the app's middlewares, and aiohttp answers it in plain text and logs
a traceback at ERROR. Here it gets a JSON error in the OpenAI shape, and one line at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from http_api.errors import APIError, error_response

log = logging.getLogger("rtserve.server")

HANDLER_GRACE_S = 5.0  # after the app's shutdown hooks: how long open requests get to write their last bytes


class JSONErrorHandler(RequestHandler):
    """aiohttp's per-connection protocol, answering what it cannot parse (or a failure outside the app's
    middlewares) in the OpenAI error shape."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            error = APIError("The server had an internal error", status=status, code="internal_error")
        else:
            lines = (message or str(exc or "")).strip().splitlines()
            reason = lines[0] if lines else HTTPStatus(status).phrase
            log.info("refused a malformed HTTP request from %s: %s", request.remote, reason)
            error = APIError(
                f"The HTTP request could not be parsed: {reason}", status=status, code="invalid_http_request"
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error response can follow")
        response = error_response(error)
        response.force_close()
        return response


class JSONErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = JSONErrorHandler  # the same slots: only handle_error differs
        return handler


class JSONErrorAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JSONErrorServer  # no state of its own: only the connection protocol differs
        return server


async def serve(app: web.Application, host: str, port: int, access_log: logging.Logger | None) -> None:
    """Serve until the first SIGINT/SIGTERM, then clean up (the app's on_shutdown hooks drain the work). A
    second signal stops waiting for the drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    runner = JSONErrorAppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,  # a client that disconnects cancels its handler, which aborts its request
        shutdown_timeout=HANDLER_GRACE_S,
        access_log=access_log,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("serving on %s", site.name)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(app: web.Application, host: str, port: int, access_log: logging.Logger | None = None) -> None:
    try:
        asyncio.run(serve(app, host, port, access_log))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
