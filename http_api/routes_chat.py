"""POST /v1/chat/completions: with tools (http_api/tool_calls.py) and reasoning output
(http_api/reasoning_parsers.py), each reply split into its parts by http_api/chat_choices.py."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.interface import EngineClient
from engine.request import GenerationOutput, GenerationRequest, TokenLogprob
from engine.sampling import SamplingParams
from engine.vision.inputs import MultimodalInputs
from http_api import sse
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_sequences, check_tokens
from http_api.chat_choices import (
    ReplyRules,
    ReplyStream,
    assistant_message,
    chat_usage,
    count_reasoning_tokens,
    finish_reason,
    reply_rules,
    split_reply,
)
from http_api.errors import bad_request, parse_model, read_json
from http_api.generation import (
    Collected,
    RequestAborted,
    clamp_logprob,
    closing,
    collect,
    encode_messages,
    fan_out,
    lora_adapter,
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
from http_api.media import MediaRef
from http_api.media_prompt import encode_media_chat
from http_api.protocol_openai.chat import (
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
from http_api.protocol_openai.chat_tools import ChatUsage
from http_api.request_id import request_id
from http_api.sampling_defaults import max_tokens_or_default, with_defaults
from http_api.tool_calls import ToolPlan, ToolSettings, plan_tools


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


async def chat_prompt(
    engine: EngineClient, limits: HTTPLimits, req: ChatCompletionRequest, tools: ToolPlan | None = None
) -> tuple[list[int], MultimodalInputs | None]:
    """The prompt ids: the messages (and tools) through the chat template (with vLLM's template options),
    truncated as truncate_prompt_tokens asks; with a vision-language LLM, the processor's template and
    the request's images and videos (http_api/media_prompt.py)."""
    if engine.vision is not None:
        return await media_chat_prompt(engine, limits, req, tools)
    messages = [m.to_template(i) for i, m in enumerate(req.messages)]
    ids = await encode_messages(
        engine, limits, messages, req.chat_template, req.chat_template_kwargs,
        add_generation_prompt=req.add_generation_prompt and not req.continue_final_message,
        continue_final_message=req.continue_final_message, add_special_tokens=req.add_special_tokens,
        tools=tools.tools if tools else None,
    )  # fmt: skip
    return truncate_prompt(ids, req.truncate_prompt_tokens, req.truncation_side, engine.max_model_len), None


async def media_chat_prompt(
    engine: EngineClient, limits: HTTPLimits, req: ChatCompletionRequest, tools: ToolPlan | None
) -> tuple[list[int], MultimodalInputs | None]:
    refs: list[MediaRef] = []
    messages = [m.to_template(i, refs) for i, m in enumerate(req.messages)]
    ids, multimodal = await encode_media_chat(
        engine, limits, messages, refs, req.chat_template, req.chat_template_kwargs,
        add_generation_prompt=req.add_generation_prompt and not req.continue_final_message,
        continue_final_message=req.continue_final_message, tools=tools.tools if tools else None,
    )  # fmt: skip
    kept = truncate_prompt(ids, req.truncate_prompt_tokens, req.truncation_side, engine.max_model_len)
    if multimodal is not None and len(kept) != len(ids):
        raise bad_request(
            "truncate_prompt_tokens would cut a prompt that holds images or videos",
            param="truncate_prompt_tokens",
        )
    return kept, multimodal


def request_tools(req: ChatCompletionRequest, limits: HTTPLimits) -> ToolPlan | None:
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    settings = ToolSettings(limits.tool_call_parser, limits.enable_auto_tool_choice)
    return plan_tools(tools, req.tool_choice, req.parallel_tool_calls, settings)


def with_structure(params: SamplingParams, tools: ToolPlan | None, rules: ReplyRules) -> SamplingParams:
    """A forced tool call's grammar; with a reasoning parser, any constraint starts after the thinking."""
    structured = params.structured
    if tools is not None and tools.structured is not None:
        if structured is not None:
            raise bad_request(
                "A forced tool_choice cannot be combined with response_format or structured_outputs",
                param="tool_choice",
            )
        structured = tools.structured
    if structured is not None and rules.reasoning is not None:
        structured = dataclasses.replace(structured, start_after=rules.reasoning.end)
    return dataclasses.replace(params, structured=structured)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine, limits = request.app[ENGINE_KEY], request.app[SETTINGS_KEY]
    req = parse_model(ChatCompletionRequest, await read_json(request))
    req.check_supported()
    model = require_llm(engine, req.model)
    samples = samples_per_prompt(req)
    check_sequences(limits, 1, samples)
    tools = request_tools(req, limits)
    prompt_ids, multimodal = await chat_prompt(engine, limits, req, tools)
    rules = reply_rules(req, limits.reasoning_parser, tools, engine.tokenizer, prompt_ids)
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
    sampling = engine_params(sampling, req, engine, req.engine_prompt_logprobs())  # response_format etc.
    params = validated(with_structure(sampling, tools, rules), engine, rename)
    lora = lora_adapter(engine, req.model)  # None: the base model
    requests = [
        GenerationRequest(list(prompt_ids), seeded(params, i), lora_name=lora, multimodal=multimodal)
        for i in range(samples)
    ]
    check_tokens(limits, requests, max_param)
    if req.stream:
        return await stream_chat(request, req, model, requests, rules)

    results = await collect(engine, requests)
    rid = request_id(request, "chatcmpl")
    body = chat_body(engine.tokenizer, req, prompt_ids, results, rid, model, rules)
    return web.json_response(body.model_dump())


def chat_body(
    tokenizer: Any,
    req: ChatCompletionRequest,
    prompt_ids: list[int],
    results: list[Collected],
    body_id: str,
    model: str,
    rules: ReplyRules,
) -> ChatCompletion:
    """The whole reply; with best_of, the n most likely samples (usage counts every sample made)."""
    prefix = req.echoed_prefix()
    split = {id(r): split_reply(r.text, rules) for r in results}
    choices = []
    for i, r in enumerate(best_of(results, req.n, samples_per_prompt(req))):
        parts = split[id(r)]
        choice = ChatChoice(
            index=i,
            message=assistant_message(parts, prefix),
            logprobs=chat_logprobs(tokenizer, r.logprobs) if req.logprobs else None,
            finish_reason=finish_reason(r.finish_reason, bool(parts.tool_calls)),
            token_ids=list(r.token_ids) if req.return_token_ids else None,
        )
        choices.append(choice)
    reasoning_tokens = sum(
        count_reasoning_tokens(tokenizer, r.token_ids, split[id(r)].reasoning_chars) for r in results
    )
    completion_tokens = sum(r.completion_tokens for r in results)
    usage = chat_usage(rules, len(prompt_ids), completion_tokens, reasoning_tokens)
    with_prompt_logprobs = req.engine_prompt_logprobs() is not None
    return ChatCompletion(
        id=body_id, model=model, choices=choices, usage=usage,
        prompt_logprobs=prompt_logprobs_json(tokenizer, prompt_ids, results[0].prompt_logprobs)
        if with_prompt_logprobs else None,
        prompt_token_ids=list(prompt_ids) if req.return_token_ids else None,
    )  # fmt: skip


@dataclass
class ChoiceState:
    """One streamed choice: its reply parser, the token ids not yet sent, and the counts for usage."""

    reply: ReplyStream
    held: list[int] = field(default_factory=list)  # return_token_ids: sent with the next chunk
    token_ids: list[int] = field(default_factory=list)
    completion_tokens: int = 0


def increment_chunks(
    tokenizer: Any, req: ChatCompletionRequest, i: int, out: GenerationOutput, state: ChoiceState
) -> list[ChatChunkChoice]:
    """The chunks one increment of choice i makes sendable (none while text is held back: a partial stop
    string, UTF-8 sequence, think tag or tool call). The last carries the increment's logprobs, finish
    reason and token ids."""
    state.held.extend(out.token_ids)
    state.token_ids.extend(out.token_ids)
    state.completion_tokens = out.completion_tokens
    deltas = state.reply.feed(out.text)
    if out.finish_reason is not None:
        deltas += state.reply.finish()
    if not deltas and not out.logprobs and out.finish_reason is None:
        return []
    if not deltas:
        deltas = [ChatDelta() if state.reply.called else ChatDelta(content="")]
    chunks = [ChatChunkChoice(index=i, delta=delta) for delta in deltas]
    last = chunks[-1]
    last.logprobs = chat_logprobs(tokenizer, out.logprobs) if req.logprobs and out.logprobs else None
    last.finish_reason = finish_reason(out.finish_reason, state.reply.called)
    if req.return_token_ids:
        last.token_ids, state.held = list(state.held), []
    return chunks


async def stream_chat(
    request: web.Request,
    req: ChatCompletionRequest,
    model: str,
    requests: list[GenerationRequest],
    rules: ReplyRules,
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    response = await sse.open_stream(request)
    chunk_id, created = request_id(request, "chatcmpl"), int(time.time())
    with_usage = req.include_usage

    async def send(choices: list[ChatChunkChoice], usage: ChatUsage | None = None, **extra: Any) -> None:
        chunk = ChatCompletionChunk(
            id=chunk_id, created=created, model=model, choices=choices, usage=usage, **extra
        )
        await sse.send(response, chunk.to_json(with_usage_field=with_usage))

    states = [ChoiceState(ReplyStream(rules)) for _ in requests]
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
                for choice in increment_chunks(engine.tokenizer, req, i, out, states[i]):
                    await send([choice])
        if with_usage:
            reasoning = sum(
                count_reasoning_tokens(engine.tokenizer, s.token_ids, s.reply.reasoning_chars) for s in states
            )
            completion = sum(s.completion_tokens for s in states)
            await send([], chat_usage(rules, len(requests[0].prompt_token_ids), completion, reasoning))
        await sse.send_done(response)
    return response
