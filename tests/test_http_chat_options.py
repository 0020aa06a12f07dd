"""vLLM's chat-template options: add_generation_prompt, continue_final_message, echo and add_special_tokens
(live server, greedy), plus add_special_tokens with a tokenizer that does add a BOS (in process)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoTokenizer

from engine.config import default_cache_dir
from engine.llm.chat import encode_chat_async
from http_api.protocol_openai.completions import CompletionRequest
from http_api.routes_completions import encode_prompts

LLM = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PREFILL = {"role": "assistant", "content": "The capital of France is"}


def chat(http, server, status: int = 200, **body: Any) -> dict:
    body = {"model": LLM, "temperature": 0, "max_tokens": 12, "return_token_ids": True, **body}
    response = http.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    return response.json()


def tokenize(http, server, text: str) -> list[int]:
    body = {"prompt": text, "add_special_tokens": False}
    return http.post(f"{server.base_url}/tokenize", json=body).json()["tokens"]


def test_add_generation_prompt(http, server):
    opening = tokenize(http, server, "<|im_start|>assistant\n")
    with_prompt = chat(http, server, messages=QUESTION)
    without = chat(http, server, messages=QUESTION, add_generation_prompt=False)
    assert with_prompt["prompt_token_ids"][-len(opening) :] == opening
    assert with_prompt["prompt_token_ids"] == without["prompt_token_ids"] + opening


def test_continue_final_message(http, server):
    body = chat(
        http, server, messages=[*QUESTION, PREFILL], continue_final_message=True, add_generation_prompt=False
    )
    ids = body["prompt_token_ids"]
    assert ids[-len(tokenize(http, server, " is")) :] == tokenize(
        http, server, " is"
    )  # left open, no <|im_end|>
    reply = body["choices"][0]["message"]["content"]
    assert reply.lstrip().startswith("Paris")  # it continues the sentence rather than starting a new turn
    # The default add_generation_prompt gives way to continue_final_message
    assert (
        chat(http, server, messages=[*QUESTION, PREFILL], continue_final_message=True)["prompt_token_ids"]
        == ids
    )
    closed = chat(http, server, messages=[*QUESTION, PREFILL])["prompt_token_ids"]
    assert closed[: len(ids)] == ids and len(closed) > len(ids)
    both = chat(http, server, 400, messages=QUESTION, continue_final_message=True, add_generation_prompt=True)
    assert both["error"]["param"] == "continue_final_message"


def test_echo_prepends_the_final_assistant_message(http, server):
    messages = [*QUESTION, PREFILL]
    plain = chat(http, server, messages=messages, continue_final_message=True)["choices"][0]["message"][
        "content"
    ]
    echoed = chat(http, server, messages=messages, continue_final_message=True, echo=True)
    assert echoed["choices"][0]["message"]["content"] == PREFILL["content"] + plain
    stream_body = {"model": LLM, "messages": messages, "continue_final_message": True, "echo": True,
                   "temperature": 0, "max_tokens": 12, "stream": True}  # fmt: skip
    response = http.post(f"{server.base_url}/v1/chat/completions", json=stream_body, stream=True)
    deltas = [
        json.loads(line[6:])["choices"]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert "".join(c[0]["delta"].get("content", "") for c in deltas if c) == PREFILL["content"] + plain
    # echo after a user message has nothing to prepend
    assert (
        chat(http, server, messages=QUESTION, echo=True)["choices"][0]["message"]["content"]
        == (chat(http, server, messages=QUESTION)["choices"][0]["message"]["content"])
    )


def test_add_special_tokens_is_accepted(http, server):
    # SmolLM2's tokenizer adds no BOS of its own, so the ids are the same either way; the field must be
    # understood (vLLM's default is false for chat, true for completions), not refused as unknown.
    assert (
        chat(http, server, messages=QUESTION, add_special_tokens=True)["prompt_token_ids"]
        == (chat(http, server, messages=QUESTION)["prompt_token_ids"])
    )
    response = http.post(
        f"{server.base_url}/v1/completions",
        json={
            "model": LLM,
            "prompt": "Hello",
            "max_tokens": 1,
            "add_special_tokens": False,
            "return_token_ids": True,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["prompt_token_ids"] == tokenize(http, server, "Hello")


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The served model's tokenizer, told to add its BOS (<|im_start|>, id 1) the way Llama's does."""
    return AutoTokenizer.from_pretrained(default_cache_dir() / "llm" / LLM, add_bos_token=True)


def test_add_special_tokens_with_a_bos_tokenizer(bos_tokenizer):
    bos = bos_tokenizer.bos_token_id
    plain = asyncio.run(encode_chat_async(bos_tokenizer, QUESTION))
    with_bos = asyncio.run(encode_chat_async(bos_tokenizer, QUESTION, add_special_tokens=True))
    assert with_bos == [bos, *plain]

    engine = SimpleNamespace(tokenizer=bos_tokenizer, max_model_len=2048, vocab_size=len(bos_tokenizer))
    default = encode_prompts(engine, CompletionRequest(prompt="Hello"))  # type: ignore[arg-type]
    bare = encode_prompts(engine, CompletionRequest(prompt="Hello", add_special_tokens=False))  # type: ignore[arg-type]
    assert default[0][1] == [bos, *bare[0][1]]
    assert default[0][0] == bare[0][0] == "Hello"  # echo returns the prompt as sent
