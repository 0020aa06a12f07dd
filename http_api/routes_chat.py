"""POST /v1/chat/completions."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from engine.request import GenerationRequest, TokenLogprob
from engine.sampling import SamplingParams
from http_api import sse
from http_api.app_keys import ENGINE_KEY
from http_api.errors import APIError, parse_model, read_json
from http_api.generation import (
    RequestAborted,
    clamp_logprob,
    closing,
    collect,
    encode_chat,
    fan_out,
    require_llm,
    resolve_max_tokens,
    seeded,
    token_bytes,
    token_text,
    validated,
)
from http_api.protocol_openai import (
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
    Usage,
    new_id,
)

log = logging.getLogger("rtserve.http")


def sampling_params(req: ChatCompletionRequest, max_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        seed=req.seed,
        stop=req.stop_list(),
        stop_token_ids=list(req.stop_token_ids or []),
        ignore_eos=req.ignore_eos,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        logit_bias=req.logit_bias_ids(),
        logprobs=req.logprobs_k(),
        skip_special_tokens=req.skip_special_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
    )


def chat_logprobs(tokenizer: object, logprobs: list[TokenLogprob]) -> ChatChoiceLogprobs:
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
    engine = request.app[ENGINE_KEY]
    req = parse_model(ChatCompletionRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    messages = [m.to_template(i) for i, m in enumerate(req.messages)]
    prompt_ids = encode_chat(engine, messages, req.chat_template_kwargs)
    uses_new_name = req.max_completion_tokens is not None
    max_param = "max_completion_tokens" if uses_new_name else "max_tokens"
    max_tokens = resolve_max_tokens(
        engine, len(prompt_ids), req.requested_max_tokens(), max_param, "messages"
    )
    rename = {"max_tokens": "max_completion_tokens"} if uses_new_name else None
    params = validated(sampling_params(req, max_tokens), engine, rename)
    requests = [GenerationRequest(list(prompt_ids), seeded(params, i)) for i in range(req.n)]
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
    try:
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
    except ConnectionResetError:
        pass  # the client left; closing the streams above aborted its requests
    except APIError as exc:
        await sse.send_error(response, exc)
    except Exception:
        log.exception("chat stream failed")
        await sse.send_error(
            response, APIError("The server had an internal error", status=500, code="internal_error")
        )
    return response
