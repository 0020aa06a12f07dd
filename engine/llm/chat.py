"""Chat messages to prompt token ids: the one place a chat template is rendered.

`encode_chat` renders where it is called: the tokenizer's own template, a bounded amount of work (the
realtime Conversation calls it). The server's --chat-template replaces the model's own at load time
(configure_chat_template). With tools, or tool calls and results in the history, a ChatML model whose
template knows nothing of tools (the embedded SmolLM2) gets
engine/models/chat_templates/smollm2_tools.jinja, unless the request or the server gave a template.
`encode_chat_async` renders on a small pool of threads of its own (not the event loop, not the inference
thread). A template that the request supplied (a front end lets one through
only when the operator trusts them) renders there under a deadline, so a template that loops for ever ends
with InvalidParameter("chat_template") instead of holding a thread.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import sys
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
        "sanitize_control_tokens", "tools", "continue_final_message",
    }
)  # fmt: skip
TOOLS_TEMPLATE = Path(__file__).resolve().parents[1] / "models" / "chat_templates" / "smollm2_tools.jinja"
_JINJA_CHARS = "{}\n"  # a --chat-template value holding any of these is a template, not a path (as vLLM)
_configured: weakref.WeakSet[Any] = weakref.WeakSet()  # tokenizers whose template the server replaced

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


def load_chat_template(spec: str) -> str:
    """--chat-template: a file's path, or the template itself (as vLLM reads it). ValueError for a path
    that cannot be read or a template that is not valid Jinja."""
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except OSError as exc:
        if not any(c in spec for c in _JINJA_CHARS):
            raise ValueError(f"the chat template {spec!r} looks like a file path, but: {exc}") from None
        text = codecs.decode(spec, "unicode_escape") if spec.isascii() else spec
    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"the chat template is not valid Jinja: {exc}") from None
    return text


def configure_chat_template(tokenizer: Any, spec: str | None) -> None:
    """The server's template (--chat-template) in place of the model's own, for every chat."""
    if spec is None:
        return
    tokenizer.chat_template = load_chat_template(spec)
    _configured.add(tokenizer)


@functools.cache
def _tools_template() -> str:
    return TOOLS_TEMPLATE.read_text(encoding="utf-8")


def uses_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> bool:
    return bool(tools) or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def tools_template_for(tokenizer: Any) -> str | None:
    """The shipped tool template for a ChatML model whose own template does not render tools; None where
    the template in force is the one to use (it knows tools, or the server chose it)."""
    own = tokenizer.chat_template
    if tokenizer in _configured or not isinstance(own, str) or "tools" in own or "<|im_start|>" not in own:
        return None
    return _tools_template()


def _checked_kwargs(template_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(template_kwargs or {})
    for key in kwargs:
        if key in RESERVED_KWARGS:
            raise InvalidParameter(
                f"chat_template_kwargs.{key}",
                f"chat_template_kwargs.{key} is set by the server, not the request",
            )
    return kwargs


def render_chat(
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


def render_chat_within(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    chat_template: str,
    kwargs: dict[str, Any],
    add_generation_prompt: bool,
    timeout_s: float,
) -> str:
    """render_chat under a deadline, checked by a trace function on this thread (a template compiles to Python:
    its loops are lines, so even an empty loop body is checked)."""
    sys.settrace(_deadline_tracer(time.monotonic() + timeout_s))
    try:
        return render_chat(tokenizer, messages, chat_template, kwargs, add_generation_prompt)
    except _PastDeadline:
        raise InvalidParameter(
            "chat_template",
            f"The chat template took longer than {timeout_s:g} s to render",
            code="chat_template_timeout",
        ) from None
    finally:
        sys.settrace(None)


def chat_template_options(
    template_kwargs: dict[str, Any] | None, tools: list[dict[str, Any]] | None, continue_final_message: bool
) -> dict[str, Any]:
    kwargs = _checked_kwargs(template_kwargs)
    if tools:
        kwargs["tools"] = tools
    if continue_final_message:
        kwargs["continue_final_message"] = True
    return kwargs


def encode_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    template_kwargs: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Render the chat template in force, then tokenize it (the template holds the BOS/role tokens).

    Raises InvalidParameter(param="messages") when the template rejects the messages."""
    template = tools_template_for(tokenizer) if uses_tools(messages, tools) else None
    kwargs = chat_template_options(template_kwargs, tools, False)
    text = render_chat(tokenizer, messages, template, kwargs, add_generation_prompt)
    return tokenizer.encode(text, add_special_tokens=False)


def _encode_bounded(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    chat_template: str | None,
    template_kwargs: dict[str, Any] | None,
    add_generation_prompt: bool,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    kwargs = chat_template_options(template_kwargs, tools, continue_final_message)
    if chat_template is None:
        template = tools_template_for(tokenizer) if uses_tools(messages, tools) else None
        text = render_chat(tokenizer, messages, template, kwargs, add_generation_prompt)
    else:
        text = render_chat_within(
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
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """encode_chat off the event loop, on the template threads. `chat_template`: a template the request
    supplied (the caller decides whether to trust one), rendered within REQUEST_TEMPLATE_TIMEOUT_S.
    continue_final_message: the last message is left open (no end-of-turn) for the model to continue;
    add_special_tokens: the tokenizer's own special tokens (a BOS) on top of what the template writes;
    tools: OpenAI tool objects, for a template that describes them to the model.

    Raises InvalidParameter: "messages" (the template rejects them), "chat_template" (not valid Jinja, or
    past the deadline), "chat_template_kwargs.<key>" (an option the server sets)."""
    job = functools.partial(
        _encode_bounded, tokenizer, messages, chat_template, template_kwargs, add_generation_prompt,
        continue_final_message, add_special_tokens, tools,
    )  # fmt: skip
    return await asyncio.get_running_loop().run_in_executor(_pool, job)
