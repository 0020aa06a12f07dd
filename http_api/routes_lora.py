"""Loading and unloading LoRA adapters at runtime: vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter
(plain-text success, OpenAI-shaped errors) and SGLang's /load_lora_adapter and /unload_lora_adapter
(LoRAUpdateOutput). Both change what the server serves, so both answer only with
--enable-lora-runtime-updates. An unloaded adapter's accepted requests finish with it."""

from __future__ import annotations

from aiohttp import web

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.errors import APIError, parse_model, read_json
from http_api.generation import require_llm
from http_api.protocol_openai.lora import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from http_api.protocol_sglang import LoadLoRAAdapterReqInput, LoRAUpdateOutput, UnloadLoRAAdapterReqInput


def _engine(request: web.Request) -> EngineClient:
    limits = request.app.get(SETTINGS_KEY)
    if limits is None or not limits.enable_lora_runtime_updates:
        raise APIError(
            "Loading and unloading LoRA adapters at runtime is off; start the server with "
            "--enable-lora-runtime-updates to allow it",
            status=404,
            code="not_found",
        )
    engine = request.app[ENGINE_KEY]
    require_llm(engine, None)
    return engine


def adapter_not_found(name: str) -> APIError:
    return APIError(
        f"The lora adapter '{name}' cannot be found.", status=404, param="lora_name", code="model_not_found"
    )


async def vllm_load(request: web.Request) -> web.Response:
    engine = _engine(request)
    req = parse_model(LoadLoRAAdapterRequest, await read_json(request))
    if req.load_inplace and req.lora_name in engine.lora_adapters:
        await engine.unload_lora_adapter(req.lora_name)
    await engine.load_lora_adapter(req.lora_name, req.lora_path)  # InvalidParameter: a 400
    return web.Response(text=f"Success: LoRA adapter '{req.lora_name}' added successfully.")


async def vllm_unload(request: web.Request) -> web.Response:
    engine = _engine(request)
    req = parse_model(UnloadLoRAAdapterRequest, await read_json(request))
    if req.lora_name not in engine.lora_adapters:
        raise adapter_not_found(req.lora_name)
    await engine.unload_lora_adapter(req.lora_name)
    return web.Response(text=f"Success: LoRA adapter '{req.lora_name}' removed successfully.")


def _sglang_reply(engine: EngineClient, error: str | None = None, status: int = 200) -> web.Response:
    loaded = {name: info.path for name, info in engine.lora_adapters.items()}
    body = LoRAUpdateOutput(success=error is None, error_message=error, loaded_adapters=loaded)
    return web.json_response(body.model_dump(), status=status)


async def sglang_load(request: web.Request) -> web.Response:
    engine = _engine(request)
    req = parse_model(LoadLoRAAdapterReqInput, await read_json(request))
    try:
        await engine.load_lora_adapter(req.lora_name, req.lora_path)
    except InvalidParameter as exc:
        return _sglang_reply(engine, exc.message, status=400)
    return _sglang_reply(engine)


async def sglang_unload(request: web.Request) -> web.Response:
    engine = _engine(request)
    req = parse_model(UnloadLoRAAdapterReqInput, await read_json(request))
    if req.lora_name not in engine.lora_adapters:
        return _sglang_reply(engine, f"The lora adapter '{req.lora_name}' cannot be found.", status=404)
    await engine.unload_lora_adapter(req.lora_name)
    return _sglang_reply(engine)


def add_lora_routes(app: web.Application) -> None:
    app.router.add_post("/v1/load_lora_adapter", vllm_load)
    app.router.add_post("/v1/unload_lora_adapter", vllm_unload)
    app.router.add_post("/load_lora_adapter", sglang_load)
    app.router.add_post("/unload_lora_adapter", sglang_unload)
