"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.request import GenerationRequest, TokenLogprob
from http_api import sse
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_sequences, check_tokens
from http_api.errors import parse_model, read_json
from http_api.generation import (
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
from http_api.protocol_openai.common import Usage, new_id


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


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine, limits = request.app[ENGINE_KEY], request.app[SETTINGS_KEY]
    req = parse_model(ChatCompletionRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    check_sequences(limits, 1, req.n)
    messages = [m.to_template(i) for i, m in enumerate(req.messages)]
    prompt_ids = await encode_messages(engine, limits, messages, req.chat_template, req.chat_template_kwargs)
    uses_new_name = req.max_completion_tokens is not None
    max_param = "max_completion_tokens" if uses_new_name else "max_tokens"
    max_tokens = resolve_max_tokens(
        engine, len(prompt_ids), req.requested_max_tokens(), max_param, "messages"
    )
    rename = {"max_tokens": "max_completion_tokens"} if uses_new_name else None
    params = validated(req.to_sampling_params(max_tokens, req.logprobs_k()), engine, rename)
    requests = [GenerationRequest(list(prompt_ids), seeded(params, i)) for i in range(req.n)]
    check_tokens(limits, requests, max_param)
    if req.stream:
        return await stream_chat(request, req, model, requests)

    results = await collect(engine, requests)
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content=r.text),
            logprobs=chat_logprobs(engine.tokenizer, r.logprobs) if req.logprobs else None,
            finish_reason=r.finish_reason,
        )
        for i, r in enumerate(results)
    ]
    completion_tokens = sum(r.completion_tokens for r in results)
    usage = Usage(
        prompt_tokens=len(prompt_ids),
        completion_tokens=completion_tokens,
        total_tokens=len(prompt_ids) + completion_tokens,
    )
    body = ChatCompletion(id=new_id("chatcmpl"), model=model, choices=choices, usage=usage)
    return web.json_response(body.model_dump())


async def stream_chat(
    request: web.Request, req: ChatCompletionRequest, model: str, requests: list[GenerationRequest]
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    response = await sse.open_stream(request)
    chunk_id, created = new_id("chatcmpl"), int(time.time())
    with_usage = req.include_usage

    async def send(choices: list[ChatChunkChoice], usage: Usage | None = None) -> None:
        chunk = ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=choices, usage=usage)
        await sse.send(response, chunk.to_json(with_usage_field=with_usage))

    completion_tokens = [0] * len(requests)
    async with sse.reporting_errors(response, "chat"):
        for i in range(len(requests)):
            await send([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
        async with closing(fan_out(engine, requests)) as stream:
            async for i, out in stream:
                if out.finish_reason == "abort":
                    raise RequestAborted()
                completion_tokens[i] = out.completion_tokens
                if not out.text and not out.logprobs and out.finish_reason is None:
                    continue  # tokens held back (partial stop string or UTF-8 sequence)
                logprobs = (
                    chat_logprobs(engine.tokenizer, out.logprobs) if req.logprobs and out.logprobs else None
                )
                delta = ChatDelta(content=out.text)
                await send(
                    [
                        ChatChunkChoice(
                            index=i, delta=delta, logprobs=logprobs, finish_reason=out.finish_reason
                        )
                    ]
                )
        if with_usage:
            prompt_tokens = len(requests[0].prompt_token_ids)
            total = sum(completion_tokens)
            usage = Usage(
                prompt_tokens=prompt_tokens, completion_tokens=total, total_tokens=prompt_tokens + total
            )
            await send([], usage)
        await sse.send_done(response)
    return response
