"""POST /v1/completions (the legacy text-completion API)."""

from __future__ import annotations

import time

from aiohttp import web

from engine.interface import EngineClient
from engine.request import GenerationRequest
from http_api import sse
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_sequences, check_tokens
from http_api.completion_choices import Prompt, StreamedChoices, build_choice
from http_api.errors import parse_model, read_json
from http_api.generation import (
    RequestAborted,
    check_token_ids,
    closing,
    collect,
    fan_out,
    lora_adapter,
    require_llm,
    resolve_max_tokens,
    seeded,
    validated,
)
from http_api.llm_options import best_of, engine_params, samples_per_prompt, truncate_prompt
from http_api.protocol_openai.common import Usage
from http_api.protocol_openai.completions import (
    Completion,
    CompletionChoice,
    CompletionRequest,
)
from http_api.request_id import request_id
from http_api.sampling_defaults import with_defaults

# The engine names the number of alternatives top_logprobs; this API calls it logprobs.
LOGPROBS_NAME = {"top_logprobs": "logprobs"}


def encode_prompts(engine: EngineClient, req: CompletionRequest) -> list[Prompt]:
    """(text, token ids) per prompt, after truncate_prompt_tokens; the text is what echo returns."""
    tokenizer = engine.tokenizer
    encoded = []
    for i, prompt in enumerate(req.prompts()):
        if isinstance(prompt, str):
            text, ids = prompt, tokenizer.encode(prompt, add_special_tokens=req.add_special_tokens)
        else:
            check_token_ids(engine, prompt, f"prompt[{i}]" if isinstance(req.prompt[0], list) else "prompt")
            text, ids = tokenizer.decode(prompt), prompt
        kept = truncate_prompt(ids, req.truncate_prompt_tokens, req.truncation_side, engine.max_model_len)
        encoded.append((text if kept is ids else tokenizer.decode(kept), kept))
    return encoded


async def completions(request: web.Request) -> web.StreamResponse:
    engine, limits = request.app[ENGINE_KEY], request.app[SETTINGS_KEY]
    req = parse_model(CompletionRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    samples = samples_per_prompt(req)
    check_sequences(limits, len(req.prompts()), samples)
    prompts = encode_prompts(engine, req)
    requests: list[GenerationRequest] = []
    for _, ids in prompts:
        # echo with max_tokens 0 scores the prompt: one token is made (the prefill's), none returned
        asked = 1 if req.echo_only else req.max_tokens
        max_tokens = resolve_max_tokens(engine, len(ids), asked, "max_tokens")
        sampling = with_defaults(req.to_sampling_params(max_tokens, req.logprobs), req, engine)
        sampling = engine_params(sampling, req, engine, req.engine_prompt_logprobs())
        params = validated(sampling, engine, LOGPROBS_NAME)
        lora = lora_adapter(engine, req.model)  # None: the base model
        requests += [GenerationRequest(list(ids), seeded(params, j), lora_name=lora) for j in range(samples)]
    check_tokens(limits, requests, "max_tokens")
    if req.stream:
        return await stream_completions(request, req, model, prompts, requests)

    results = await collect(engine, requests)
    completion_tokens = 0 if req.echo_only else sum(r.completion_tokens for r in results)
    choices = [
        build_choice(engine.tokenizer, req, index, r, prompts[index // req.n])
        for index, r in enumerate(best_of(results, req.n, samples))
    ]
    prompt_tokens = sum(len(ids) for _, ids in prompts)
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    body = Completion(id=request_id(request, "cmpl"), model=model, choices=choices, usage=usage)
    return web.json_response(body.model_dump())


async def stream_completions(
    request: web.Request,
    req: CompletionRequest,
    model: str,
    prompts: list[Prompt],
    requests: list[GenerationRequest],
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    response = await sse.open_stream(request)
    chunk_id, created = request_id(request, "cmpl"), int(time.time())
    with_usage = req.include_usage

    async def send(choices: list[CompletionChoice], usage: Usage | None = None) -> None:
        chunk = Completion(id=chunk_id, created=created, model=model, choices=choices, usage=usage)
        await sse.send(response, chunk.model_dump(exclude=None if with_usage else {"usage"}))

    completion_tokens = [0] * len(requests)
    choices = StreamedChoices(engine.tokenizer, req, prompts)
    async with sse.reporting_errors(response, "completion"):
        if choices.echo_up_front:
            for index in range(len(requests)):
                await send([choices.opening(index)])
        async with closing(fan_out(engine, requests)) as stream:
            async for index, out in stream:
                if out.finish_reason == "abort":
                    raise RequestAborted()
                completion_tokens[index] = out.completion_tokens
                if (choice := choices.chunk(index, out)) is not None:
                    await send([choice])
        if with_usage:
            prompt_tokens = sum(len(ids) for _, ids in prompts)
            total = 0 if req.echo_only else sum(completion_tokens)
            usage = Usage(
                prompt_tokens=prompt_tokens, completion_tokens=total, total_tokens=prompt_tokens + total
            )
            await send([], usage)
        await sse.send_done(response)
    return response
