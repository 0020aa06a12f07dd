"""Reasoning output: --reasoning-parser splits the model's thinking (reasoning_content) from its answer,
whole and streamed, with qwen3's enable_thinking switch, SGLang's separate_reasoning / stream_reasoning
and usage.completion_tokens_details.reasoning_tokens. The embedded model does not think on its own, so the
live tests open a think block with an assistant prefill (continue_final_message) after two examples of
thinking in the history; the parsers are also checked on fixed texts split at every character."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import openai
import pytest

from engine.sampling import SamplingParams
from engine.structured_output import StructuredOutput
from http_api.chat_choices import ReplyRules
from http_api.reasoning_parsers import ReasoningStream, reasoning_parser, reasoning_token_count
from http_api.routes_chat import with_structure

LLM = "smollm2-135m-instruct"
EXAMPLES = [
    {"role": "user", "content": "What is the capital of France?"},
    {
        "role": "assistant",
        "content": "<think>The user asks about France. The capital of France is Paris.</think>The capital of France is Paris.",
    },
    {"role": "user", "content": "What is the capital of Germany?"},
    {
        "role": "assistant",
        "content": "<think>The user asks about Germany. The capital of Germany is Berlin.</think>The capital of Germany is Berlin.",
    },
]
THINKING = [
    *EXAMPLES,
    {"role": "user", "content": "What is the capital of Japan?"},
    {"role": "assistant", "content": "<think>"},
]
PREFILL = {"continue_final_message": True, "add_generation_prompt": False}


@pytest.fixture(scope="module")
def client(reasoning_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{reasoning_server.base_url}/v1", api_key="unused", max_retries=0)


def think(client: openai.OpenAI, **kwargs):
    kwargs.setdefault("max_tokens", 40)
    kwargs["extra_body"] = {**PREFILL, **kwargs.get("extra_body", {})}
    return client.chat.completions.create(model=LLM, messages=THINKING, temperature=0, **kwargs)


def test_reasoning_split_from_answer(client):
    reply = think(client)
    message = reply.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert "Japan" in reasoning and "think>" not in reasoning
    assert message.model_extra["reasoning"] == reasoning  # vLLM sends both names
    assert "Tokyo" in message.content and "think>" not in message.content
    details = reply.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < reply.usage.completion_tokens


def test_reasoning_streamed_in_many_deltas(client):
    whole = think(client).choices[0].message
    reasoning, content, order = [], [], []
    for chunk in think(client, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            assert chunk.usage.completion_tokens_details.reasoning_tokens > 0
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                reasoning.append(extra["reasoning_content"])
                order.append("r")
            if choice.delta.content:
                content.append(choice.delta.content)
                order.append("c")
    assert len(reasoning) > 5, "the think block arrives across many deltas"
    assert "".join(reasoning) == whole.model_extra["reasoning_content"]
    assert "".join(content) == whole.content
    assert "".join(order).rstrip("c").count("c") == 0, "all reasoning comes before the answer"


def test_cut_off_thinking_is_all_reasoning(client):
    choice = think(client, max_tokens=5).choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content is None and choice.message.model_extra["reasoning_content"]


def test_enable_thinking_false_is_all_answer(client):
    reply = client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0,
        max_tokens=20, extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )  # fmt: skip
    message = reply.choices[0].message
    assert "Paris" in message.content and message.model_extra.get("reasoning_content") is None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


def test_separate_and_stream_reasoning_off(client):
    merged = think(client, extra_body={"separate_reasoning": False}).choices[0].message
    assert "</think>" in merged.content and merged.model_extra.get("reasoning_content") is None
    pieces = [
        c.choices[0].delta.model_extra.get("reasoning_content")
        for c in think(client, stream=True, extra_body={"stream_reasoning": False})
        if c.choices
    ]
    assert len([p for p in pieces if p]) == 1, "stream_reasoning false: the thinking comes in one piece"


CAPITAL = {
    "type": "object",
    "properties": {"capital": {"type": "string", "maxLength": 30}},
    "required": ["capital"],
    "additionalProperties": False,
}


def test_structured_output_applies_after_thinking(client):
    """The schema constrains the answer only: the thinking before </think> stays free text."""
    answer_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": CAPITAL}}
    message = think(client, max_tokens=60, response_format=answer_format).choices[0].message
    assert "Japan" in message.model_extra["reasoning_content"]
    jsonschema.validate(json.loads(message.content), CAPITAL)


# ------------------------------------------------------------------------------------ fixed texts


REPLY = "<think>\nI weigh it.</think>\n\nThe answer is 42."


@pytest.mark.parametrize("name", ["deepseek_r1", "qwen3"])
def test_parser_splits_at_every_boundary(name):
    parser = reasoning_parser(name)
    assert parser.extract(REPLY) == ("\nI weigh it.", "\n\nThe answer is 42.")
    for step in range(1, len(REPLY) + 1):
        stream, reasoning, content = ReasoningStream(parser), "", ""
        for i in range(0, len(REPLY), step):
            r, c = stream.feed(REPLY[i : i + step])
            reasoning, content = reasoning + r, content + c
        r, c = stream.finish()
        assert (reasoning + r, content + c) == ("\nI weigh it.", "\n\nThe answer is 42.")
        assert stream.reasoning_chars == REPLY.index("</think>") + len("</think>")


def test_parser_rules():
    qwen3, r1 = reasoning_parser("qwen3"), reasoning_parser("deepseek-r1")  # SGLang's spelling too
    assert r1.extract("still thinking") == ("still thinking", None)  # no end tag: cut off while thinking
    assert (
        qwen3.thinks(None)
        and not qwen3.thinks({"enable_thinking": False})
        and r1.thinks({"enable_thinking": False})
    )
    assert qwen3.ended_in("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not qwen3.ended_in("<think>a</think>b<|im_start|>assistant\n<think>")
    held = ReasoningStream(qwen3, stream_reasoning=False)
    assert held.feed("a b c </thi") == ("", "") and held.feed("nk>x") == ("a b c ", "x")
    assert reasoning_token_count(lambda ids: "ab" * len(ids), [1, 2, 3, 4], 5) == 3


def test_structured_output_starts_after_thinking():
    rules = ReplyRules(reasoning=reasoning_parser("qwen3"), counts_reasoning=True)
    params = dataclasses.replace(SamplingParams(), structured=StructuredOutput("json_object", ""))
    assert with_structure(params, None, rules).structured.start_after == "</think>"
    no_thinking = ReplyRules(reasoning=None, counts_reasoning=True)
    assert with_structure(params, None, no_thinking).structured.start_after is None
