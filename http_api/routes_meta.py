"""Models, health, version, metrics, tokenize and detokenize."""

from __future__ import annotations

import dataclasses
import importlib.metadata

from aiohttp import web

from engine.interface import EngineClient
from http_api import metrics
from http_api.app_keys import ENGINE_KEY, GAUGES_KEY, SETTINGS_KEY
from http_api.errors import model_not_found, parse_model, read_json
from http_api.generation import check_token_ids, encode_messages, require_llm
from http_api.protocol_openai.models import (
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)


def model_cards(engine: EngineClient) -> list[ModelCard]:
    created = int(engine.stats().started_at)
    cards = []
    defaults = engine.generation_defaults
    cards += [
        ModelCard(id=name, created=created, max_model_len=engine.max_model_len, generation_defaults=defaults)
        for name in engine.served_model_names  # the LLM under each of its names; the first is reported
    ]
    cards += [
        ModelCard(
            id=name, created=created, max_model_len=engine.max_model_len, root=info.path, parent=info.parent
        )
        for name, info in engine.lora_adapters.items()  # LoRA adapters, each on its base model
    ]
    cards += [ModelCard(id=name, created=created) for name in engine.asr_models]
    cards += [
        ModelCard(id=name, created=created, max_model_len=info.max_model_len, task=info.task)
        for name, info in engine.pooling_models.items()
        if name != engine.llm_name  # the served LLM, also loaded as an embedder: one card
    ]
    return cards


async def list_models(request: web.Request) -> web.Response:
    body = ModelList(data=model_cards(request.app[ENGINE_KEY]))
    return web.json_response(body.model_dump(exclude_none=True))


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    for card in model_cards(request.app[ENGINE_KEY]):
        if card.id == name:
            return web.json_response(card.model_dump(exclude_none=True))
    raise model_not_found(name)


async def health(request: web.Request) -> web.Response:
    engine = request.app.get(ENGINE_KEY)
    if engine is None or not engine.running:
        return web.json_response({"status": "unavailable"}, status=503)
    health = engine.health()  # degraded (still serving): fewer engine replicas up than asked for
    body = {k: v for k, v in dataclasses.asdict(health).items() if v is not None}
    return web.json_response(body, status=503 if health.status == "unavailable" else 200)


def server_version() -> str:
    try:
        return importlib.metadata.version("rtserve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": server_version()})


async def prometheus(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    text = metrics.render(engine.stats(), gauges=request.app[GAUGES_KEY], replicas=engine.replica_stats())
    return web.Response(text=text, content_type=metrics.CONTENT_TYPE)


async def tokenize(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    req = parse_model(TokenizeRequest, await read_json(request))
    req.check()
    require_llm(engine, req.model)
    if req.messages is not None:
        messages = [m.to_template(i) for i, m in enumerate(req.messages)]
        tokens = await encode_messages(
            engine,
            request.app[SETTINGS_KEY],
            messages,
            req.chat_template,
            req.chat_template_kwargs,
            add_generation_prompt=req.add_generation_prompt,
        )
    else:
        tokens = engine.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
    body = TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=engine.max_model_len)
    return web.json_response(body.model_dump())


async def detokenize(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    req = parse_model(DetokenizeRequest, await read_json(request))
    require_llm(engine, req.model)
    check_token_ids(engine, req.tokens, "tokens")
    body = DetokenizeResponse(prompt=engine.tokenizer.decode(req.tokens))
    return web.json_response(body.model_dump())
