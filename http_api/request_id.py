"""X-Request-Id: a client's own id for its request, echoed back on the response and used in the ids the
API returns (chatcmpl-<id>, cmpl-<id>, resp_<id>), so a client can match logs and replies to requests."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from http_api.errors import bad_request

HEADER = "X-Request-Id"
_VALID = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: safe in an id, a header and a URL path


def client_request_id(request: web.Request) -> str | None:
    """The request's X-Request-Id, or None without one; a 400 for one that cannot be an id."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    if not _VALID.fullmatch(value):
        raise bad_request(
            f"The {HEADER} header must be 1 to 256 visible ASCII characters",
            param=HEADER,
            code="invalid_value",
        )
    return value


def request_id(request: web.Request, prefix: str, sep: str = "-") -> str:
    """The id for what this request creates: prefix + sep + the client's X-Request-Id, or a random one."""
    return f"{prefix}{sep}{client_request_id(request) or uuid.uuid4().hex}"


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response to a request with a valid X-Request-Id carries it back."""
    value = request.headers.get(HEADER)
    if value is not None and _VALID.fullmatch(value) and HEADER not in response.headers:
        response.headers[HEADER] = value
