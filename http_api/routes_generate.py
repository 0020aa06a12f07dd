"""POST /generate: SGLang's native API (text or token ids in; cumulative text and ids out)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.interface import EngineClient
from engine.request import GenerationOutput, GenerationRequest, TokenLogprob
from engine.vision.inputs import MultimodalInputs
from http_api import sse
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.budget import check_sequences, check_tokens
from http_api.errors import parse_model, read_json
from http_api.generation import (
    check_token_ids,
    clamp_logprob,
    closing,
    fan_out,
    lora_by_path,
    require_llm,
    resolve_max_tokens,
    token_text,
    validated,
)
from http_api.limits import HTTPLimits
from http_api.media import MediaRef
from http_api.media_prompt import encode_media_prompt
from http_api.protocol_sglang import (
    DEFAULT_MAX_NEW_TOKENS,
    FinishReason,
    GenerateRequest,
    GenerateResponse,
    LogprobEntry,
    MetaInfo,
)
from http_api.sampling_defaults import with_defaults
from http_api.structured_outputs import from_sglang

SAMPLING_NAMES = {
    "max_tokens": "max_new_tokens",
    "seed": "sampling_seed",
    "top_logprobs": "top_logprobs_num",
    "min_tokens": "min_new_tokens",
}


@dataclass
class SequenceState:
    """One prompt's cumulative output, as SGLang reports it."""

    rid: str
    prompt_tokens: int
    max_tokens: int
    started: float = field(default_factory=time.perf_counter)
    text: str = ""
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    completion_tokens: int = 0
    finish: FinishReason | None = None

    def add(self, out: GenerationOutput) -> None:
        self.text += out.text
        self.output_ids += out.token_ids
        self.logprobs += out.logprobs or []
        self.completion_tokens = out.completion_tokens
        if out.finish_reason == "length":
            self.finish = FinishReason(type="length", length=self.max_tokens)
        elif out.finish_reason == "stop":
            self.finish = FinishReason(type="stop", matched=out.matched_stop)
        elif out.finish_reason == "abort":
            self.finish = FinishReason(type="abort", message="aborted by the server")

    def response(self, req: GenerateRequest, tokenizer: Any, index: int | None = None) -> GenerateResponse:
        meta = MetaInfo(
            id=self.rid,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=self.finish,
            e2e_latency=round(time.perf_counter() - self.started, 6),
        )
        if req.return_logprob:
            with_text = req.return_text_in_logprobs

            def entry(token_id: int, logprob: float) -> LogprobEntry:
                text = token_text(tokenizer, token_id) if with_text else None
                return (clamp_logprob(logprob), token_id, text)

            meta.output_token_logprobs = [entry(lp.token_id, lp.logprob) for lp in self.logprobs]
            if req.top_logprobs_num > 0:
                meta.output_top_logprobs = [
                    [entry(a.token_id, a.logprob) for a in lp.top] for lp in self.logprobs
                ]
        return GenerateResponse(text=self.text, output_ids=list(self.output_ids), meta_info=meta, index=index)


async def prompt_ids(
    engine: EngineClient,
    limits: HTTPLimits,
    req: GenerateRequest,
    i: int,
    prompt: str | list[int],
    count: int,
) -> tuple[list[int], MultimodalInputs | None]:
    """Prompt i's token ids; with image_data, the text through the vision-language model's processor."""
    refs = [MediaRef("image", url, param) for url, param in req.images_for(i, count)]
    if refs and isinstance(prompt, str):
        return await encode_media_prompt(engine, limits, prompt, refs, "image_data")
    if isinstance(prompt, str):
        return engine.tokenizer.encode(prompt), None
    check_token_ids(engine, prompt, "input_ids")
    return prompt, None


async def build_requests(
    engine: EngineClient, limits: HTTPLimits, req: GenerateRequest
) -> tuple[list[GenerationRequest], list[SequenceState]]:
    prompts = req.prompts()
    prompt_param = "text" if req.text is not None else "input_ids"
    check_sequences(limits, len(prompts), prompt_param=prompt_param)
    params = req.params_for(len(prompts))
    rids = req.rids(len(prompts))
    logprobs = req.top_logprobs_num if req.return_logprob else None
    requests, states = [], []
    for i, prompt in enumerate(prompts):
        where = "sampling_params" if not isinstance(req.sampling_params, list) else f"sampling_params[{i}]"
        params[i].check_supported(where)
        ids, multimodal = await prompt_ids(engine, limits, req, i, prompt, len(prompts))
        asked = params[i].max_new_tokens
        if asked is None:
            room = engine.max_model_len - len(ids)
            asked = min(DEFAULT_MAX_NEW_TOKENS, room) if room > 0 else None
        max_tokens = resolve_max_tokens(engine, len(ids), asked, "max_new_tokens", prompt_param)
        sampling = with_defaults(params[i].to_engine(max_tokens, logprobs), params[i], engine)
        sp = params[i]
        sampling.structured = from_sglang(where, sp.json_schema, sp.regex, sp.ebnf, sp.structural_tag)
        sampling = validated(sampling, engine, SAMPLING_NAMES)
        lora = lora_by_path(engine, req.lora_for(i))  # None: the base model
        requests.append(GenerationRequest(list(ids), sampling, lora_name=lora, multimodal=multimodal))
        states.append(
            SequenceState(rid=rids[i] or uuid.uuid4().hex, prompt_tokens=len(ids), max_tokens=max_tokens)
        )
    check_tokens(limits, requests, "max_new_tokens")
    return requests, states


async def generate(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    req = parse_model(GenerateRequest, await read_json(request))
    req.check_supported(reads_images=engine.vision is not None)
    require_llm(engine, None)
    requests, states = await build_requests(engine, request.app[SETTINGS_KEY], req)
    if req.stream:
        return await stream_generate(request, req, requests, states)
    async with closing(fan_out(engine, requests)) as stream:
        async for i, out in stream:
            states[i].add(out)
    bodies = [s.response(req, engine.tokenizer).to_json() for s in states]
    return web.json_response(bodies if req.is_batch else bodies[0])


async def stream_generate(
    request: web.Request, req: GenerateRequest, requests: list[GenerationRequest], states: list[SequenceState]
) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    response = await sse.open_stream(request)
    async with sse.reporting_errors(response, "generate"):
        async with closing(fan_out(engine, requests)) as stream:
            async for i, out in stream:
                states[i].add(out)
                if not out.text and not out.token_ids and out.finish_reason is None:
                    continue
                body = states[i].response(req, engine.tokenizer, index=i if req.is_batch else None)
                await sse.send(response, body.to_json())
        await sse.send_done(response)
    return response
