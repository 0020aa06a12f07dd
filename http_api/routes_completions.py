"""POST /v1/completions (the legacy text-completion API)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.interface import EngineClient
from engine.request import GenerationRequest, TokenLogprob
from http_api import sse
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_sequences, check_tokens
from http_api.errors import parse_model, read_json
from http_api.generation import (
    RequestAborted,
    check_token_ids,
    clamp_logprob,
    closing,
    collect,
    fan_out,
    require_llm,
    resolve_max_tokens,
    seeded,
    token_text,
    validated,
)
from http_api.protocol_openai.common import Usage, new_id
from http_api.protocol_openai.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)

# The engine names the number of alternatives top_logprobs; this API calls it logprobs.
LOGPROBS_NAME = {"top_logprobs": "logprobs"}


def completion_logprobs(tokenizer: Any, logprobs: list[TokenLogprob], offset: int) -> CompletionLogprobs:
    """The legacy format; text_offset counts characters from the start of the returned text."""
    result = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for lp in logprobs:
        token = token_text(tokenizer, lp.token_id)
        result.tokens.append(token)
        result.token_logprobs.append(clamp_logprob(lp.logprob))
        result.top_logprobs.append(
            {token_text(tokenizer, a.token_id): clamp_logprob(a.logprob) for a in lp.top}
        )
        result.text_offset.append(offset)
        offset += len(token)
    return result


def encode_prompts(engine: EngineClient, req: CompletionRequest) -> list[tuple[str, list[int]]]:
    """(text, token ids) per prompt; the text is what echo returns."""
    tokenizer = engine.tokenizer
    encoded = []
    for i, prompt in enumerate(req.prompts()):
        if isinstance(prompt, str):
            encoded.append((prompt, tokenizer.encode(prompt)))
        else:
            check_token_ids(engine, prompt, f"prompt[{i}]" if isinstance(req.prompt[0], list) else "prompt")
            encoded.append((tokenizer.decode(prompt), prompt))
    return encoded


async def completions(request: web.Request) -> web.StreamResponse:
    engine, limits = request.app[ENGINE_KEY], request.app[SETTINGS_KEY]
    req = parse_model(CompletionRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    check_sequences(limits, len(req.prompts()), max(req.n, req.best_of or 1))
    prompts = encode_prompts(engine, req)
    requests: list[GenerationRequest] = []
    for _, ids in prompts:
        max_tokens = resolve_max_tokens(engine, len(ids), req.max_tokens, "max_tokens")
        params = validated(req.to_sampling_params(max_tokens, req.logprobs), engine, LOGPROBS_NAME)
        requests += [GenerationRequest(list(ids), seeded(params, j)) for j in range(req.n)]
    check_tokens(limits, requests, "max_tokens")
    if req.stream:
        return await stream_completions(request, req, model, prompts, requests)

    results = await collect(engine, requests)
    choices = []
    for index, r in enumerate(results):
        prefix = prompts[index // req.n][0] if req.echo else ""
        logprobs = completion_logprobs(engine.tokenizer, r.logprobs, 0) if req.logprobs is not None else None
        choices.append(
            CompletionChoice(
                index=index, text=prefix + r.text, logprobs=logprobs, finish_reason=r.finish_reason
            )
        )
    prompt_tokens = sum(len(ids) for _, ids in prompts)
    completion_tokens = sum(r.completion_tokens for r in results)
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    body = Completion(id=new_id("cmpl"), model=model, choices=choices, usage=usage)
    return web.json_response(body.model_dump())


async def stream_completions(
    request: web.Request,
    req: CompletionRequest,
    model: str,
    prompts: list[tuple[str, list[int]]],
    requests: list[GenerationRequest],
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    response = await sse.open_stream(request)
    chunk_id, created = new_id("cmpl"), int(time.time())
    with_usage = req.include_usage

    async def send(choices: list[CompletionChoice], usage: Usage | None = None) -> None:
        chunk = Completion(id=chunk_id, created=created, model=model, choices=choices, usage=usage)
        await sse.send(response, chunk.model_dump(exclude=None if with_usage else {"usage"}))

    completion_tokens = [0] * len(requests)
    offsets = [0] * len(requests)
    async with sse.reporting_errors(response, "completion"):
        if req.echo:
            for index in range(len(requests)):
                await send(
                    [CompletionChoice(index=index, text=prompts[index // req.n][0], finish_reason=None)]
                )
        async with closing(fan_out(engine, requests)) as stream:
            async for index, out in stream:
                if out.finish_reason == "abort":
                    raise RequestAborted()
                completion_tokens[index] = out.completion_tokens
                if not out.text and not out.logprobs and out.finish_reason is None:
                    continue
                logprobs = None
                if req.logprobs is not None:
                    logprobs = completion_logprobs(engine.tokenizer, out.logprobs or [], offsets[index])
                offsets[index] += len(out.text)
                choice = CompletionChoice(
                    index=index, text=out.text, logprobs=logprobs, finish_reason=out.finish_reason
                )
                await send([choice])
        if with_usage:
            prompt_tokens = sum(len(ids) for _, ids in prompts)
            total = sum(completion_tokens)
            usage = Usage(
                prompt_tokens=prompt_tokens, completion_tokens=total, total_tokens=prompt_tokens + total
            )
            await send([], usage)
        await sse.send_done(response)
    return response
