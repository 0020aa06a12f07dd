"""Chat messages to prompt token ids: the one place a chat template is rendered.

`encode_chat` renders where it is called: the tokenizer's own template, a bounded amount of work (the
realtime Conversation calls it). `encode_chat_async` renders on a small pool of threads of its own (not the
event loop, not the inference thread). A template that the request supplied (a front end lets one through
only when the operator trusts them) renders there under a deadline, so a template that loops for ever ends
with InvalidParameter("chat_template") instead of holding a thread.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import jinja2

from engine.errors import InvalidParameter

TEMPLATE_THREADS = 2
REQUEST_TEMPLATE_TIMEOUT_S = 2.0  # the most CPU time a request-supplied template may take to render
# apply_chat_template's own options: the server sets them; template kwargs from a client may not.
RESERVED_KWARGS = frozenset(
    {
        "conversation", "chat_template", "add_generation_prompt", "tokenize", "padding", "truncation",
        "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
        "sanitize_control_tokens",
    }
)  # fmt: skip

_pool = ThreadPoolExecutor(TEMPLATE_THREADS, thread_name_prefix="rtserve-chat-template")


class _PastDeadline(BaseException):
    """Raised inside a render that ran past its deadline. A BaseException, so that no `except Exception`
    in the template engine or in transformers can swallow it (tracing stops once it is raised)."""


def _deadline_tracer(deadline: float) -> Any:
    """A sys.settrace function that checks the clock on every call and line of the traced thread."""

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise _PastDeadline
        return trace

    return trace


def _checked_kwargs(template_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(template_kwargs or {})
    for key in kwargs:
        if key in RESERVED_KWARGS:
            raise InvalidParameter(
                f"chat_template_kwargs.{key}",
                f"chat_template_kwargs.{key} is set by the server, not the request",
            )
    return kwargs


def _render(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    chat_template: str | None,
    kwargs: dict[str, Any],
    add_generation_prompt: bool,
) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages,
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **kwargs,
        )
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidParameter("chat_template", f"The chat template is not valid Jinja: {exc}") from exc
    except Exception as exc:  # jinja raises its own errors for messages a template rejects
        raise InvalidParameter(
            "messages", f"The chat template could not render these messages: {exc}"
        ) from exc


def _render_within(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    chat_template: str,
    kwargs: dict[str, Any],
    add_generation_prompt: bool,
    timeout_s: float,
) -> str:
    """_render under a deadline, checked by a trace function on this thread (a template compiles to Python:
    its loops are lines, so even an empty loop body is checked)."""
    sys.settrace(_deadline_tracer(time.monotonic() + timeout_s))
    try:
        return _render(tokenizer, messages, chat_template, kwargs, add_generation_prompt)
    except _PastDeadline:
        raise InvalidParameter(
            "chat_template",
            f"The chat template took longer than {timeout_s:g} s to render",
            code="chat_template_timeout",
        ) from None
    finally:
        sys.settrace(None)


def encode_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    template_kwargs: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Render the tokenizer's chat template, then tokenize it (the template holds the BOS/role tokens).

    Raises InvalidParameter(param="messages") when the template rejects the messages."""
    text = _render(tokenizer, messages, None, _checked_kwargs(template_kwargs), add_generation_prompt)
    return tokenizer.encode(text, add_special_tokens=False)


def _encode_bounded(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    chat_template: str | None,
    template_kwargs: dict[str, Any] | None,
    add_generation_prompt: bool,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
) -> list[int]:
    kwargs = _checked_kwargs(template_kwargs)
    if continue_final_message:
        kwargs["continue_final_message"] = True
    if chat_template is None:
        text = _render(tokenizer, messages, None, kwargs, add_generation_prompt)
    else:
        text = _render_within(
            tokenizer, messages, chat_template, kwargs, add_generation_prompt, REQUEST_TEMPLATE_TIMEOUT_S
        )
    return tokenizer.encode(text, add_special_tokens=add_special_tokens)


async def encode_chat_async(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    chat_template: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
) -> list[int]:
    """encode_chat off the event loop, on the template threads. `chat_template`: a template the request
    supplied (the caller decides whether to trust one), rendered within REQUEST_TEMPLATE_TIMEOUT_S.
    continue_final_message: the last message is left open (no end-of-turn) for the model to continue;
    add_special_tokens: the tokenizer's own special tokens (a BOS) on top of what the template writes.

    Raises InvalidParameter: "messages" (the template rejects them), "chat_template" (not valid Jinja, or
    past the deadline), "chat_template_kwargs.<key>" (an option the server sets)."""
    job = functools.partial(
        _encode_bounded, tokenizer, messages, chat_template, template_kwargs, add_generation_prompt,
        continue_final_message, add_special_tokens,
    )  # fmt: skip
    return await asyncio.get_running_loop().run_in_executor(_pool, job)
