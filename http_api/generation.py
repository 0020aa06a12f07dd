"""What the LLM routes share: model checks, prompt-length rules, and running n requests at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from engine.llm.chat import encode_chat_async
from engine.request import GenerationOutput, GenerationRequest, TokenLogprob
from engine.sampling import SamplingParams
from http_api.errors import APIError, bad_request, engine_error, invalid_parameter, model_not_found
from http_api.limits import HTTPLimits

T = TypeVar("T")


def require_llm(engine: EngineClient, model: str | None, param: str = "model") -> str:
    """The served LLM's name (the first of --served-model-name); 404 if the request names a model that is
    none of the LLM's names, or no LLM is served."""
    if engine.llm_name is None or engine.tokenizer is None:
        raise APIError(
            "This server serves no LLM (it was started with --llm none)",
            status=404,
            param=param,
            code="model_not_found",
        )
    if model is not None and model not in engine.served_model_names:
        if lora_adapter(engine, model) is None:
            raise model_not_found(model, param)
        return model  # a LoRA adapter: replies name it as the request did (vLLM, SGLang)
    return engine.llm_name


def lora_adapter(engine: EngineClient, model: str | None) -> str | None:
    """The LoRA adapter a request's model names, "adapter" (vLLM) or "base:adapter" (SGLang); None for the
    base model or a name that is not served."""
    if model is None or model in engine.served_model_names:
        return None
    adapters = engine.lora_adapters
    if model in adapters:
        return model
    base, colon, name = model.rpartition(":")
    return name if colon and base in engine.served_model_names and name in adapters else None


def lora_by_path(engine: EngineClient, lora_path: str | None) -> str | None:
    """SGLang's lora_path: a served adapter's name (or the directory it was loaded from); 404 if none."""
    if lora_path is None:
        return None
    for info in engine.lora_adapters.values():
        if lora_path in (info.name, info.path):
            return info.name
    raise model_not_found(lora_path, "lora_path")


def check_token_ids(engine: EngineClient, ids: list[int], param: str) -> None:
    size = engine.vocab_size
    for token_id in ids:
        if not 0 <= token_id < size:
            raise bad_request(f"token id {token_id} is outside the vocabulary (size {size})", param=param)


def resolve_max_tokens(
    engine: EngineClient, prompt_len: int, requested: int | None, param: str, prompt_param: str = "prompt"
) -> int:
    """Requested tokens, or the rest of the context; 400 when prompt + completion cannot fit."""
    limit = engine.max_model_len
    if prompt_len == 0:
        raise bad_request("the prompt is empty", param="prompt")
    if requested is None:
        if prompt_len >= limit:
            raise APIError(
                f"This model's maximum context length is {limit} tokens, but the prompt has {prompt_len} "
                "tokens, leaving no room for the completion. Please shorten the prompt.",
                param=prompt_param,
                code="context_length_exceeded",
            )
        return limit - prompt_len
    if requested >= 1 and prompt_len + requested > limit:
        raise APIError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the completion). "
            "Please reduce the length of the prompt or the completion.",
            param=param,
            code="context_length_exceeded",
        )
    return requested


def request_template(
    chat_template: str | None, template_kwargs: dict[str, Any] | None, trusted: bool
) -> tuple[str | None, dict[str, Any]]:
    """(the template a request supplied, the other template kwargs). A request may send one at the top level
    or, as vLLM allows, in chat_template_kwargs; either is a 400 unless the operator trusts them."""
    kwargs = dict(template_kwargs or {})
    nested = kwargs.pop("chat_template", None)
    template, param = (
        (chat_template, "chat_template")
        if chat_template is not None
        else (nested, "chat_template_kwargs.chat_template")
    )
    if template is None:
        return None, kwargs
    if not isinstance(template, str):
        raise bad_request(f"{param} must be a string", param=param)
    if not trusted:
        raise APIError(
            "This server does not render chat templates sent with a request: it uses the model's own. "
            "Its operator can allow them with --trust-request-chat-template.",
            param=param,
            code="untrusted_chat_template",
        )
    return template, kwargs


async def encode_messages(
    engine: EngineClient,
    limits: HTTPLimits,
    messages: list[dict[str, Any]],
    chat_template: str | None,
    template_kwargs: dict[str, Any] | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Prompt ids for chat messages (and the tools the template describes), rendered off the event loop
    (engine/llm/chat.py)."""
    template, kwargs = request_template(chat_template, template_kwargs, limits.trust_request_chat_template)
    return await encode_chat_async(
        engine.tokenizer,
        messages,
        chat_template=template,
        template_kwargs=kwargs,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        add_special_tokens=add_special_tokens,
        tools=tools,
    )


def validated(
    params: SamplingParams, engine: EngineClient, rename: dict[str, str] | None = None
) -> SamplingParams:
    try:
        params.validate(engine.vocab_size)
    except InvalidParameter as exc:
        raise invalid_parameter(exc, rename) from exc
    return params


def seeded(params: SamplingParams, i: int) -> SamplingParams:
    """The i-th of n samples: same params, seed + i so seeded requests give n different answers."""
    if i == 0 or params.seed is None:
        return params
    return SamplingParams(**{**params.__dict__, "seed": params.seed + i})


def token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


def token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


class RequestAborted(APIError):
    def __init__(self) -> None:
        super().__init__(
            "The request was aborted by the server (it is shutting down)", status=503, code="request_aborted"
        )


@contextlib.asynccontextmanager
async def closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close the stream on exit, so leaving early aborts the engine request now rather than at GC."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def fan_out(
    engine: EngineClient, requests: list[GenerationRequest]
) -> AsyncIterator[tuple[int, GenerationOutput]]:
    """Run requests concurrently and yield (index, output) as increments arrive, in arrival order.

    Closing this iterator early (client gone, error) cancels every request, which aborts them in the engine.
    """
    if len(requests) == 1:
        try:
            async with closing(engine.generate(requests[0])) as stream:
                async for out in stream:
                    yield 0, out
        except Exception as exc:
            raise engine_error(exc) from exc
        return

    queue: asyncio.Queue[tuple[int, GenerationOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, req: GenerationRequest) -> None:
        try:
            async with closing(engine.generate(req)) as stream:
                async for out in stream:
                    queue.put_nowait((i, out))
            queue.put_nowait((i, None))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            queue.put_nowait((i, exc))

    tasks = [asyncio.create_task(pump(i, req)) for i, req in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise engine_error(item) from item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Collected:
    """One finished sequence, accumulated from its increments."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    matched_stop: int | str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None

    def add(self, out: GenerationOutput) -> None:
        self.text += out.text
        if out.prompt_logprobs is not None:
            self.prompt_logprobs = out.prompt_logprobs
        self.token_ids += out.token_ids
        if out.logprobs:
            self.logprobs += out.logprobs
        self.prompt_tokens = out.prompt_tokens
        self.completion_tokens = out.completion_tokens
        if out.finish_reason is not None:
            if out.finish_reason == "abort":
                raise RequestAborted()
            self.finish_reason = out.finish_reason
            self.matched_stop = out.matched_stop


async def collect(engine: EngineClient, requests: list[GenerationRequest]) -> list[Collected]:
    results = [Collected() for _ in requests]
    async with closing(fan_out(engine, requests)) as stream:
        async for i, out in stream:
            results[i].add(out)
    return results


def clamp_logprob(value: float) -> float:
    """-inf is not JSON; OpenAI reports impossible tokens as -9999."""
    return value if value > -9999.0 else -9999.0
