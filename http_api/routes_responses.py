"""The Responses API: POST /v1/responses, GET and DELETE /v1/responses/{id}, POST /v1/responses/{id}/cancel.

A response is one chat turn: its input (a string, or message and function-call items), the instructions,
and, with previous_response_id, the stored conversation it continues. Function tools are described to the
model and calls parsed from its text (http_api/tool_calls.py). Stored responses live in memory
(http_api/response_store.py, bounded by --responses-store-size and --responses-store-ttl).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from engine.interface import EngineClient
from engine.request import GenerationRequest
from engine.structured_output import StructuredOutput
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_tokens
from http_api.errors import APIError, bad_request, parse_model, read_json
from http_api.generation import (
    collect,
    encode_messages,
    lora_adapter,
    require_llm,
    resolve_max_tokens,
    validated,
)
from http_api.limits import HTTPLimits
from http_api.media import split_media
from http_api.media_prompt import encode_media_chat
from http_api.protocol_openai.responses import FunctionTool, ResponsesRequest
from http_api.protocol_openai.responses_output import DeletedResponse, ResponseObject
from http_api.request_id import request_id
from http_api.response_store import ResponseStore, StoredResponse
from http_api.responses_build import Message, ResponsePlan, item_messages, prompt_messages, sampling_params
from http_api.responses_stream import stream_response
from http_api.sampling_defaults import max_tokens_or_default, with_defaults
from http_api.structured_outputs import from_text_format
from http_api.tool_calls import forced_calls

log = logging.getLogger("rtserve.http")

STORE_KEY: web.AppKey[ResponseStore] = web.AppKey("http_api_responses", ResponseStore)
MAX_TOKENS_NAME = {"max_tokens": "max_output_tokens"}


def not_found(rid: str, param: str | None = None) -> APIError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return APIError(
        f"{what} with id '{rid}' not found (it may have expired, been deleted, or not been stored)",
        status=404,
        param=param,
        code="response_not_found",
    )


def history(store: ResponseStore, req: ResponsesRequest) -> list[Message]:
    """The conversation a request continues: the stored one of its previous_response_id, or none."""
    if req.previous_response_id is None:
        return []
    previous = store.get(req.previous_response_id)
    if previous is None:
        raise not_found(req.previous_response_id, "previous_response_id")
    if previous.body.status in ("queued", "in_progress"):
        raise bad_request(
            f"Response '{req.previous_response_id}' has not finished yet", param="previous_response_id"
        )
    return previous.messages


def forced_tool_calls(req: ResponsesRequest, tools: list[FunctionTool]) -> StructuredOutput | None:
    """The grammar a "required" or named tool_choice holds the reply to (None: the model may answer in text).
    400 without tools, or beside a text.format (the reply cannot be both a call and that text)."""
    mode = req.tool_mode()
    if mode in ("auto", "none"):
        return None
    if not tools:
        raise bad_request("tool_choice needs tools: none were given", param="tool_choice")
    if req.text is not None and from_text_format(req.text.format or {}) is not None:
        raise bad_request("a forced tool_choice cannot be combined with text.format", param="tool_choice")
    parallel = req.parallel_tool_calls is not False
    return forced_calls([t.model_dump() for t in tools], req.forced_tool_name(), parallel)


async def plan_response(request: web.Request, engine: EngineClient, limits: HTTPLimits) -> ResponsePlan:
    req = parse_model(ResponsesRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    tools = req.function_tools()
    forced = forced_tool_calls(req, tools)
    calls_allowed = bool(tools) and req.tool_mode() != "none"
    items = req.input_items()
    vision = engine.vision is not None
    plain = isinstance(req.input, str)
    conversation = history(request.app[STORE_KEY], req) + item_messages(items, plain, vision)
    shown_tools = tools if calls_allowed else []
    prompt = prompt_messages(req.instructions, shown_tools, conversation)
    if vision:  # images in this turn's input or the stored conversation's (http_api/media.py)
        messages, refs = split_media(prompt)
        prompt_ids, multimodal = await encode_media_chat(engine, limits, messages, refs, param="input")
    else:
        prompt_ids, multimodal = await encode_messages(engine, limits, prompt, None, None), None
    requested = max_tokens_or_default(req.max_output_tokens, engine, len(prompt_ids))
    max_tokens = resolve_max_tokens(engine, len(prompt_ids), requested, "max_output_tokens", "input")
    params = sampling_params(req, max_tokens)
    params.structured = forced or params.structured
    params = validated(with_defaults(params, req, engine), engine, MAX_TOKENS_NAME)
    lora = lora_adapter(engine, req.model)
    generation = GenerationRequest(list(prompt_ids), params, lora_name=lora, multimodal=multimodal)
    check_tokens(limits, [generation], "max_output_tokens")
    rid = request_id(request, "resp", sep="_")
    return ResponsePlan(rid, model, req, tools, calls_allowed, conversation, generation)


async def create_response(request: web.Request) -> web.StreamResponse:
    engine, store = request.app[ENGINE_KEY], request.app[STORE_KEY]
    plan = await plan_response(request, engine, request.app[SETTINGS_KEY])
    keep = plan.req.store is not False
    if plan.req.background:
        return web.json_response(start_background(engine, store, plan).model_dump())
    if plan.req.stream:
        response, finished = await stream_response(request, engine, plan)
        if finished is not None and keep:
            store.put(StoredResponse(*finished))
        return response
    (result,) = await collect(engine, [plan.generation])
    body, conversation = plan.finish(result)
    if keep:
        store.put(StoredResponse(body, conversation))
    return web.json_response(body.model_dump())


def start_background(engine: EngineClient, store: ResponseStore, plan: ResponsePlan) -> ResponseObject:
    """Store the response as queued and run it in a task; GET shows its progress, cancel ends it."""
    if store.max_entries == 0:
        raise bad_request("This server stores no responses (--responses-store-size 0)", param="background")
    entry = StoredResponse(plan.response("queued"), plan.messages)
    store.put(entry)
    entry.task = asyncio.create_task(run_background(engine, plan, entry), name=f"response-{plan.id}")
    return entry.body


async def run_background(engine: EngineClient, plan: ResponsePlan, entry: StoredResponse) -> None:
    entry.body = plan.response("in_progress")
    try:
        (result,) = await collect(engine, [plan.generation])
        entry.body, entry.messages = plan.finish(result)
    except asyncio.CancelledError:
        entry.body = plan.response("cancelled")
        raise
    except APIError as exc:
        entry.body = plan.failed(exc.message)
    except Exception:
        log.exception("background response %s failed", plan.id)
        entry.body = plan.failed("The server had an internal error")


def stored(request: web.Request) -> StoredResponse:
    rid = request.match_info["response_id"]
    entry = request.app[STORE_KEY].get(rid)
    if entry is None:
        raise not_found(rid)
    return entry


async def get_response(request: web.Request) -> web.Response:
    return web.json_response(stored(request).body.model_dump())


async def delete_response(request: web.Request) -> web.Response:
    entry = stored(request)
    request.app[STORE_KEY].delete(entry.body.id)
    return web.json_response(DeletedResponse(id=entry.body.id).model_dump())


async def cancel_response(request: web.Request) -> web.Response:
    entry = stored(request)
    body = entry.body
    if not body.background:
        raise bad_request(
            "Only a response created with background: true can be cancelled", code="not_cancellable"
        )
    if body.status in ("queued", "in_progress"):
        entry.cancel()
        entry.body = body.model_copy(update={"status": "cancelled"})
    elif body.status != "cancelled":
        raise bad_request(f"Cannot cancel a response that is already {body.status}", code="not_cancellable")
    return web.json_response(entry.body.model_dump())


async def cancel_background(app: web.Application) -> None:
    app[STORE_KEY].cancel_all()


def add_responses_routes(app: web.Application, limits: HTTPLimits) -> None:
    app[STORE_KEY] = ResponseStore(limits.responses_store_size, limits.responses_store_ttl)
    app.on_cleanup.append(cancel_background)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
