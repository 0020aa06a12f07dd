"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.interface import EngineClient
from engine.request import GenerationOutput, GenerationRequest, TokenLogprob
from http_api import sse
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_sequences, check_tokens
from http_api.errors import parse_model, read_json
from http_api.generation import (
    Collected,
    RequestAborted,
    clamp_logprob,
    closing,
    collect,
    encode_messages,
    fan_out,
    require_llm,
    resolve_max_tokens,
    seeded,
    token_bytes,
    token_text,
    validated,
)
from http_api.limits import HTTPLimits
from http_api.llm_options import (
    best_of,
    engine_params,
    prompt_logprobs_json,
    samples_per_prompt,
    truncate_prompt,
)
from http_api.protocol_openai.chat import (
    AssistantMessage,
    ChatChoice,
    ChatChoiceLogprobs,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatTokenLogprob,
    TopLogprobEntry,
)
from http_api.protocol_openai.common import Usage
from http_api.request_id import request_id
from http_api.sampling_defaults import max_tokens_or_default, with_defaults


def chat_logprobs(tokenizer: Any, logprobs: list[TokenLogprob]) -> ChatChoiceLogprobs:
    content = []
    for lp in logprobs:
        token = token_text(tokenizer, lp.token_id)
        top = []
        for alt in lp.top:
            alt_token = token_text(tokenizer, alt.token_id)
            top.append(
                TopLogprobEntry(
                    token=alt_token, logprob=clamp_logprob(alt.logprob), bytes=token_bytes(alt_token)
                )
            )
        content.append(
            ChatTokenLogprob(
                token=token, logprob=clamp_logprob(lp.logprob), bytes=token_bytes(token), top_logprobs=top
            )
        )
    return ChatChoiceLogprobs(content=content)


async def chat_prompt(engine: EngineClient, limits: HTTPLimits, req: ChatCompletionRequest) -> list[int]:
    """The prompt ids: the messages through the chat template (with vLLM's template options), truncated
    as truncate_prompt_tokens asks."""
    messages = [m.to_template(i) for i, m in enumerate(req.messages)]
    ids = await encode_messages(
        engine, limits, messages, req.chat_template, req.chat_template_kwargs,
        add_generation_prompt=req.add_generation_prompt and not req.continue_final_message,
        continue_final_message=req.continue_final_message, add_special_tokens=req.add_special_tokens,
    )  # fmt: skip
    return truncate_prompt(ids, req.truncate_prompt_tokens, req.truncation_side, engine.max_model_len)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine, limits = request.app[ENGINE_KEY], request.app[SETTINGS_KEY]
    req = parse_model(ChatCompletionRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    samples = samples_per_prompt(req)
    check_sequences(limits, 1, samples)
    prompt_ids = await chat_prompt(engine, limits, req)
    uses_new_name = req.max_completion_tokens is not None
    max_param = "max_completion_tokens" if uses_new_name else "max_tokens"
    max_tokens = resolve_max_tokens(
        engine,
        len(prompt_ids),
        max_tokens_or_default(req.requested_max_tokens(), engine, len(prompt_ids)),
        max_param,
        "messages",
    )
    rename = {"max_tokens": "max_completion_tokens"} if uses_new_name else None
    sampling = with_defaults(req.to_sampling_params(max_tokens, req.logprobs_k()), req, engine)
    params = validated(engine_params(sampling, req, engine, req.engine_prompt_logprobs()), engine, rename)
    requests = [GenerationRequest(list(prompt_ids), seeded(params, i)) for i in range(samples)]
    check_tokens(limits, requests, max_param)
    if req.stream:
        return await stream_chat(request, req, model, requests)

    results = await collect(engine, requests)
    body = chat_body(engine.tokenizer, req, prompt_ids, results, request_id(request, "chatcmpl"), model)
    return web.json_response(body.model_dump())


def chat_body(
    tokenizer: Any,
    req: ChatCompletionRequest,
    prompt_ids: list[int],
    results: list[Collected],
    body_id: str,
    model: str,
) -> ChatCompletion:
    """The whole reply; with best_of, the n most likely samples (usage counts every sample made)."""
    prefix = req.echoed_prefix()
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content=prefix + r.text),
            logprobs=chat_logprobs(tokenizer, r.logprobs) if req.logprobs else None,
            finish_reason=r.finish_reason,
            token_ids=list(r.token_ids) if req.return_token_ids else None,
        )
        for i, r in enumerate(best_of(results, req.n, samples_per_prompt(req)))
    ]
    completion_tokens = sum(r.completion_tokens for r in results)
    usage = Usage(
        prompt_tokens=len(prompt_ids),
        completion_tokens=completion_tokens,
        total_tokens=len(prompt_ids) + completion_tokens,
    )
    with_prompt_logprobs = req.engine_prompt_logprobs() is not None
    return ChatCompletion(
        id=body_id, model=model, choices=choices, usage=usage,
        prompt_logprobs=prompt_logprobs_json(tokenizer, prompt_ids, results[0].prompt_logprobs)
        if with_prompt_logprobs else None,
        prompt_token_ids=list(prompt_ids) if req.return_token_ids else None,
    )  # fmt: skip


def content_chunk(
    tokenizer: Any, req: ChatCompletionRequest, i: int, out: GenerationOutput, held: list[int]
) -> ChatChunkChoice | None:
    """One streamed increment of choice i, or None while its text is held back (a partial stop string or
    UTF-8 sequence); `held` gathers the token ids not yet sent (return_token_ids)."""
    held.extend(out.token_ids)
    if not out.text and not out.logprobs and out.finish_reason is None:
        return None
    logprobs = chat_logprobs(tokenizer, out.logprobs) if req.logprobs and out.logprobs else None
    token_ids = list(held) if req.return_token_ids else None
    held.clear()
    return ChatChunkChoice(
        index=i, delta=ChatDelta(content=out.text), logprobs=logprobs, finish_reason=out.finish_reason,
        token_ids=token_ids,
    )  # fmt: skip


async def stream_chat(
    request: web.Request, req: ChatCompletionRequest, model: str, requests: list[GenerationRequest]
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    response = await sse.open_stream(request)
    chunk_id, created = request_id(request, "chatcmpl"), int(time.time())
    with_usage = req.include_usage

    async def send(choices: list[ChatChunkChoice], usage: Usage | None = None, **extra: Any) -> None:
        chunk = ChatCompletionChunk(
            id=chunk_id, created=created, model=model, choices=choices, usage=usage, **extra
        )
        await sse.send(response, chunk.to_json(with_usage_field=with_usage))

    completion_tokens = [0] * len(requests)
    held: list[list[int]] = [[] for _ in requests]
    prompt_ids = list(requests[0].prompt_token_ids) if req.return_token_ids else None
    async with sse.reporting_errors(response, "chat"):
        for i in range(len(requests)):
            role = ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))
            await send([role], prompt_token_ids=prompt_ids if i == 0 else None)
            if prefix := req.echoed_prefix():
                await send([ChatChunkChoice(index=i, delta=ChatDelta(content=prefix))])
        async with closing(fan_out(engine, requests)) as stream:
            async for i, out in stream:
                if out.finish_reason == "abort":
                    raise RequestAborted()
                completion_tokens[i] = out.completion_tokens
                if (choice := content_chunk(engine.tokenizer, req, i, out, held[i])) is not None:
                    await send([choice])
        if with_usage:
            prompt_tokens = len(requests[0].prompt_token_ids)
            total = sum(completion_tokens)
            usage = Usage(
                prompt_tokens=prompt_tokens, completion_tokens=total, total_tokens=prompt_tokens + total
            )
            await send([], usage)
        await sse.send_done(response)
    return response
