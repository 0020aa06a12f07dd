"""Every failure leaves the server as an OpenAI-shaped error: {"error": {message, type, param, code}}."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pydantic
from aiohttp import web

from engine.client_text import check_client_text
from engine.errors import EngineOverloadedError, EngineStoppedError, InvalidParameter

log = logging.getLogger("rtserve.http")

M = TypeVar("M", bound=pydantic.BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES: dict[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class APIError(Exception):
    """Raised anywhere below a handler; the middleware turns it into the error response."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(message, status=400, param=param, code=code)


def unsupported(param: str, detail: str = "") -> APIError:
    message = f"'{param}' is not supported by this server" + (f": {detail}" if detail else "")
    return APIError(message, status=400, param=param, code="unsupported_parameter")


def model_not_found(model: str, param: str = "model") -> APIError:
    return APIError(
        f"The model '{model}' does not exist or is not served here",
        status=404,
        param=param,
        code="model_not_found",
    )


def error_response(error: APIError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers)


def invalid_parameter(exc: InvalidParameter, rename: dict[str, str] | None = None) -> APIError:
    """The engine's typed validation error as a 400. `rename` maps engine-side names to the route's own
    spelling (max_tokens -> max_new_tokens); a message that starts with the old name says the new one."""
    param, message = exc.param, exc.message
    if rename and param in rename:
        renamed = rename[param]
        if message.startswith(param):
            message = renamed + message[len(param) :]
        param = renamed
    return bad_request(message, param=param, code=exc.code)


def engine_error(exc: BaseException) -> BaseException:
    """What the engine raises for a request, as the API error the client should see."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineStoppedError):
        return APIError(f"The engine is not running: {exc}", status=503, code="engine_unavailable")
    if isinstance(exc, EngineOverloadedError):
        return APIError(f"The engine is overloaded: {exc}", status=503, code="engine_overloaded")
    if isinstance(exc, InvalidParameter):
        return invalid_parameter(exc)
    if isinstance(exc, ValueError):
        return bad_request(str(exc))  # a request the engine refused without naming a parameter
    return exc


# Union members and validators that pydantic adds to an error's location: "str", "list[int]", ...
_TYPE_TAG = re.compile(
    r"^(str|int|float|bool|none|dict|list|literal|function-\w+|[a-z-]+\[.*\])$", re.IGNORECASE
)


def _loc_to_param(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not _TYPE_TAG.match(str(item)):
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def validation_error(exc: pydantic.ValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0]
    param = _loc_to_param(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        return APIError(
            f"Unrecognized request argument supplied: {param}", param=param, code="unrecognized_argument"
        )
    if first["type"] == "missing":
        return bad_request(
            f"Missing required parameter: '{param}'", param=param, code="missing_required_parameter"
        )
    if len(errors) > 1 and all(_loc_to_param(tuple(e["loc"])).startswith(param) for e in errors):
        # every member of a union rejected the value: say what was sent, not the first member's complaint
        got = type(first.get("input")).__name__
        return bad_request(f"Invalid type for '{param}': got {got}", param=param, code="invalid_type")
    message = first["msg"].removeprefix("Value error, ")
    return bad_request(
        f"Invalid value for '{param}': {message}" if param else message, param=param, code="invalid_value"
    )


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request) -> dict:
    """The request body as a JSON object whose every string is valid Unicode, or a 4xx saying what is wrong.

    A body that does not say it is JSON is a 415: a web page may post text/plain or a form to any site without
    asking first (a CORS "simple request"), but never application/json."""
    if not is_json_type(request.content_type):
        raise APIError(
            f"Expected a JSON body with 'Content-Type: application/json', got '{request.content_type}'",
            status=415,
            code="unsupported_media_type",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise APIError("The request body is too large", status=413, code="request_too_large") from exc
    if not raw:
        raise bad_request("The request body is empty; expected a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object", code="invalid_json")
    try:
        check_client_text(body)  # a lone surrogate: a 400 naming the field (InvalidParameter)
    except RecursionError as exc:
        raise bad_request("The request body is nested too deeply", code="invalid_json") from exc
    return body


def parse_model(model: type[M], body: dict) -> M:
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from exc


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc)
    except InvalidParameter as exc:
        return error_response(invalid_parameter(exc))
    except pydantic.ValidationError as exc:
        return error_response(validation_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status)
        message = exc.reason if exc.status != 404 else f"No route for {request.method} {request.path}"
        if exc.status == 405:
            message = f"Method {request.method} is not allowed for {request.path}"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(APIError(message, status=exc.status, code=code), headers)
    except ConnectionResetError:
        raise  # the client is gone; nothing to answer
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(APIError("The server had an internal error", status=500, code="internal_error"))
