"""The choices of a /v1/completions reply, whole or streamed: the legacy logprobs format, echo (the prompt,
and with logprobs its tokens' logprobs from the same prefill), vLLM's prompt_logprobs and token ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.request import GenerationOutput, TokenLogprob
from http_api.generation import Collected, clamp_logprob, token_text
from http_api.llm_options import prompt_logprobs_json
from http_api.protocol_openai.completions import CompletionChoice, CompletionLogprobs, CompletionRequest

Prompt = tuple[str, list[int]]  # the prompt's text (what echo returns) and its token ids


def completion_logprobs(
    tokenizer: Any, logprobs: list[TokenLogprob], offset: int, into: CompletionLogprobs | None = None
) -> CompletionLogprobs:
    """The legacy format; text_offset counts characters from the start of the returned text."""
    result = into or CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
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


def echo_logprobs(
    tokenizer: Any, prompt_ids: list[int], logprobs: list[TokenLogprob | None]
) -> CompletionLogprobs:
    """The echoed prompt's entries: the first token has none (null), as in OpenAI's and vLLM's replies."""
    result = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    offset = 0
    for token_id, lp in zip(prompt_ids, logprobs, strict=True):
        if lp is None:
            token = token_text(tokenizer, token_id)
            result.tokens.append(token)
            result.token_logprobs.append(None)
            result.top_logprobs.append(None)
            result.text_offset.append(offset)
            offset += len(token)
        else:
            offset = _next_offset(completion_logprobs(tokenizer, [lp], offset, into=result))
    return result


def _next_offset(logprobs: CompletionLogprobs) -> int:
    return logprobs.text_offset[-1] + len(logprobs.tokens[-1])


def choice_logprobs(
    tokenizer: Any,
    req: CompletionRequest,
    prompt: Prompt,
    prompt_lps: list[TokenLogprob | None] | None,
    output_lps: list[TokenLogprob],
    offset: int,
) -> CompletionLogprobs | None:
    """The logprobs of one choice's (first) chunk: with echo, the prompt's then the output's."""
    if req.logprobs is None:
        return None
    if not req.echo:
        return completion_logprobs(tokenizer, output_lps, offset)
    result = echo_logprobs(tokenizer, prompt[1], prompt_lps or [None] * len(prompt[1]))
    if req.echo_only:
        return result
    return completion_logprobs(tokenizer, output_lps, len(prompt[0]), into=result)


def build_choice(
    tokenizer: Any, req: CompletionRequest, index: int, result: Collected, prompt: Prompt
) -> CompletionChoice:
    text = "" if req.echo_only else result.text
    return CompletionChoice(
        index=index,
        text=(prompt[0] if req.echo else "") + text,
        logprobs=choice_logprobs(tokenizer, req, prompt, result.prompt_logprobs, result.logprobs, 0),
        finish_reason=result.finish_reason,
        prompt_logprobs=prompt_logprobs_json(tokenizer, prompt[1], result.prompt_logprobs)
        if req.prompt_logprobs is not None
        else None,
        prompt_token_ids=list(prompt[1]) if req.return_token_ids else None,
        token_ids=([] if req.echo_only else list(result.token_ids)) if req.return_token_ids else None,
    )


@dataclass
class StreamedChoices:
    """Per-choice state of a streamed completion: whether its first chunk went out (it carries the echo and
    prompt_token_ids), token ids held back with their text, and the text offset for logprobs."""

    tokenizer: Any
    req: CompletionRequest
    prompts: list[Prompt]
    started: set[int] = field(default_factory=set)
    held_ids: dict[int, list[int]] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)

    @property
    def echo_up_front(self) -> bool:
        """Echo without logprobs goes out before any token; with logprobs it waits for the prefill."""
        return bool(self.req.echo) and self.req.logprobs is None

    def prompt(self, index: int) -> Prompt:
        return self.prompts[index // self.req.n]

    def opening(self, index: int) -> CompletionChoice:
        self.started.add(index)
        self.offsets[index] = 0
        ids = self.prompt(index)[1]
        return CompletionChoice(
            index=index,
            text=self.prompt(index)[0],
            finish_reason=None,
            prompt_token_ids=list(ids) if self.req.return_token_ids else None,
            token_ids=[] if self.req.return_token_ids else None,
        )

    def chunk(self, index: int, out: GenerationOutput) -> CompletionChoice | None:
        """The chunk for this increment, or None while its text is held back (a partial stop string)."""
        echo_only = self.req.echo_only  # the one token generated is not part of the reply
        out_text, out_lps = ("", []) if echo_only else (out.text, out.logprobs or [])
        self.held_ids.setdefault(index, []).extend([] if echo_only else out.token_ids)
        first = index not in self.started
        opens = first and bool(self.req.echo or self.req.return_token_ids)
        if not opens and not out_text and not out_lps and out.finish_reason is None:
            return None
        prompt = self.prompt(index)
        echo = first and bool(self.req.echo)
        offset = self.offsets.get(index, 0)
        logprobs = None
        if echo:
            logprobs = choice_logprobs(self.tokenizer, self.req, prompt, out.prompt_logprobs, out_lps, 0)
        elif self.req.logprobs is not None:
            logprobs = completion_logprobs(self.tokenizer, out_lps, offset)
        text = (prompt[0] if echo else "") + out_text
        self.started.add(index)
        self.offsets[index] = offset + len(text)
        ids, self.held_ids[index] = self.held_ids[index], []
        with_ids = bool(self.req.return_token_ids)
        return CompletionChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=out.finish_reason,
            prompt_token_ids=list(prompt[1]) if with_ids and first else None,
            token_ids=ids if with_ids else None,
        )
