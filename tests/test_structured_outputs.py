"""Constrained decoding through the live server: JSON schemas, regex, choices, grammars, /generate,
cut-offs, constrained and free requests in one batch, and every bad constraint as a 400."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import openai
import pytest
import requests

MODEL = "smollm2-135m-instruct"

NESTED = {
    "type": "object",
    "properties": {
        "person": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
            },
            "required": ["name", "age"],
        },
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
        },
    },
    "required": ["person", "address"],
}
ENUMS = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "string", "enum": ["S", "M", "L"]},
        "in_stock": {"type": "boolean"},
    },
    "required": ["color", "size", "in_stock"],
    "additionalProperties": False,
}
ARRAYS = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 2, "maxItems": 3},
        "scores": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 10},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["tags", "scores"],
    "additionalProperties": False,
}
REQUIRED = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "note": {"type": "string", "maxLength": 10},
    },
    "required": ["title", "year"],
    "additionalProperties": False,
}
SCHEMAS = {"nested": NESTED, "enums": ENUMS, "arrays": ARRAYS, "required": REQUIRED}


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def response_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


async def test_json_schema_outputs_validate_at_temperature_0_and_1(async_openai_client) -> None:
    async def one(name: str, schema: dict, temperature: float) -> tuple[str, str | None, str]:
        reply = await async_openai_client.chat.completions.create(
            model=MODEL,
            messages=ask(f"Describe a {name} example as JSON."),
            max_tokens=200,
            temperature=temperature,
            seed=7,
            response_format=response_format(name, schema),
        )
        return name, reply.choices[0].finish_reason, reply.choices[0].message.content or ""

    jobs = [one(name, schema, t) for name, schema in SCHEMAS.items() for t in (0.0, 1.0)]
    for name, finish, content in await asyncio.gather(*jobs):
        assert finish == "stop", (name, content)
        jsonschema.validate(json.loads(content), SCHEMAS[name])


async def test_streamed_json_schema_validates(async_openai_client) -> None:
    stream = await async_openai_client.chat.completions.create(
        model=MODEL,
        messages=ask("A product as JSON."),
        max_tokens=60,
        temperature=1.0,
        stream=True,
        response_format=response_format("product", ENUMS),
    )
    text, finish = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), ENUMS)


async def test_json_object_regex_choice_and_grammars(async_openai_client) -> None:
    chat = async_openai_client.chat.completions
    json_object = chat.create(
        model=MODEL, messages=ask("Give a JSON object with a name and an age."), max_tokens=80,
        temperature=0, response_format={"type": "json_object"},
    )  # fmt: skip
    regex = async_openai_client.completions.create(
        model=MODEL, prompt="Today's date is", max_tokens=20, temperature=1.0,
        extra_body={"structured_outputs": {"regex": r"\d{4}-\d{2}-\d{2}"}},
    )  # fmt: skip
    old_regex = chat.create(
        model=MODEL, messages=ask("Give a phone number."), max_tokens=20, temperature=1.0,
        extra_body={"guided_regex": r"\+1-\d{3}-\d{4}"},
    )  # fmt: skip
    choices = ["Paris", "London", "Berlin"]
    choice = chat.create(
        model=MODEL, messages=ask("What is the capital of France?"), max_tokens=10, temperature=1.0,
        extra_body={"structured_outputs": {"choice": choices}},
    )  # fmt: skip
    old_choice = chat.create(
        model=MODEL, messages=ask("Is the sky blue?"), max_tokens=10, temperature=1.0,
        extra_body={"guided_choice": ["yes", "no"]},
    )  # fmt: skip
    ebnf = chat.create(
        model=MODEL, messages=ask("Pick a colour."), max_tokens=20, temperature=1.0,
        extra_body={"structured_outputs": {"grammar": 'root ::= "The colour is " ("red" | "blue") "."'}},
    )  # fmt: skip
    lark = async_openai_client.completions.create(
        model=MODEL, prompt="Count:", max_tokens=30, temperature=1.0,
        extra_body={"guided_grammar": 'start: NUM ("," NUM)~2\nNUM: /[0-9]{1,2}/'},
    )  # fmt: skip
    replies = await asyncio.gather(json_object, regex, old_regex, choice, old_choice, ebnf, lark)
    obj, date, phone, capital, yes_no, colour, counts = replies
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date.choices[0].text), date.choices[0].text
    assert re.fullmatch(r"\+1-\d{3}-\d{4}", phone.choices[0].message.content)
    assert capital.choices[0].message.content in choices
    assert yes_no.choices[0].message.content in ("yes", "no")
    assert re.fullmatch(r"The colour is (red|blue)\.", colour.choices[0].message.content)
    assert re.fullmatch(r"\d{1,2},\d{1,2},\d{1,2}", counts.choices[0].text), counts.choices[0].text
    assert all(r.choices[0].finish_reason == "stop" for r in replies)


def test_generate_json_schema_regex_and_ebnf(server) -> None:
    def generate(**constraint: str) -> dict:
        body = {
            "text": "Answer:",
            "sampling_params": {"max_new_tokens": 100, "temperature": 1.0, **constraint},
        }
        reply = requests.post(f"{server.base_url}/generate", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["meta_info"]["finish_reason"]["type"] == "stop"
        return reply.json()

    jsonschema.validate(json.loads(generate(json_schema=json.dumps(REQUIRED))["text"]), REQUIRED)
    assert re.fullmatch(r"(yes|no), [0-9]{2}", generate(regex=r"(yes|no), [0-9]{2}")["text"])
    assert re.fullmatch(r"x[ab]{3}", generate(ebnf='root ::= "x" ab ab ab\nab ::= "a" | "b"')["text"])


async def test_max_tokens_cut_off_is_length(async_openai_client) -> None:
    reply = await async_openai_client.chat.completions.create(
        model=MODEL, messages=ask("A person as JSON."), max_tokens=5, temperature=0,
        response_format=response_format("nested", NESTED),
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content.startswith('{"person": {')
    assert reply.usage.completion_tokens == 5


async def test_constrained_and_free_requests_share_a_batch(async_openai_client) -> None:
    """Unconstrained requests in the same steps as constrained ones are not masked: the capital question
    still gets its free-text answer, and every constrained reply validates."""
    chat = async_openai_client.chat.completions
    free = [
        chat.create(model=MODEL, messages=ask("What is the capital of France?"), max_tokens=24, temperature=0)
        for _ in range(3)
    ]
    constrained = [
        chat.create(
            model=MODEL,
            messages=ask("What is the capital of France?"),
            max_tokens=60,
            temperature=1.0,
            response_format=response_format("enums", ENUMS),
        )  # fmt: skip
        for _ in range(5)
    ]
    replies = await asyncio.gather(*free, *constrained)
    for reply in replies[:3]:
        assert "Paris" in reply.choices[0].message.content
        assert not reply.choices[0].message.content.startswith("{")
    for reply in replies[3:]:
        jsonschema.validate(json.loads(reply.choices[0].message.content), ENUMS)


BAD = [
    ("invalid json schema", {"response_format": response_format("x", {"type": "object", "properties": 3})},
     "response_format.json_schema.schema", "properties"),
    ("schema type", {"extra": {"guided_json": {"type": "strnig"}}}, "guided_json", "strnig"),
    ("regex", {"extra": {"structured_outputs": {"regex": "(ab"}}}, "structured_outputs.regex", "unclosed group"),
    ("old regex", {"extra": {"guided_regex": "[z-a]"}}, "guided_regex", "range"),
    ("grammar", {"extra": {"structured_outputs": {"grammar": 'root ::= ( "a" '}}}, "structured_outputs.grammar",
     "Expected ')'"),
    ("lark", {"extra": {"guided_grammar": "start: undefined_rule"}}, "guided_grammar", "undefined_rule"),
    ("both", {"response_format": {"type": "json_object"}, "extra": {"structured_outputs": {"regex": "a+"}}},
     "structured_outputs", "together"),
    ("two constraints", {"extra": {"structured_outputs": {"regex": "a", "choice": ["a"]}}}, "structured_outputs",
     "exactly one"),
    ("empty choice", {"extra": {"guided_choice": []}}, "guided_choice", "non-empty"),
]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
async def test_bad_constraints_are_400s_and_the_server_goes_on(async_openai_client, stream: bool) -> None:
    for label, fields, param, words in BAD:
        extra = fields.get("extra", {})
        kwargs = {k: v for k, v in fields.items() if k != "extra"}
        with pytest.raises(openai.BadRequestError) as caught:
            await async_openai_client.chat.completions.create(
                model=MODEL, messages=ask("Hi"), max_tokens=5, stream=stream, extra_body=extra, **kwargs
            )
        error = caught.value.body
        assert isinstance(error, dict) and set(error) >= {"message", "type", "param", "code"}, label
        assert error["type"] == "invalid_request_error", label
        assert error["param"] == param, (label, error)
        assert words in error["message"], (label, error["message"])
    reply = await async_openai_client.chat.completions.create(
        model=MODEL, messages=ask("Is water wet?"), max_tokens=5, extra_body={"guided_choice": ["yes", "no"]}
    )
    assert reply.choices[0].message.content in ("yes", "no")


def test_generate_bad_constraints_are_400s(server) -> None:
    for constraint, param in (
        ({"json_schema": "{not json"}, "sampling_params.json_schema"),
        ({"regex": "(ab"}, "sampling_params.regex"),
        ({"ebnf": 'root ::= "x'}, "sampling_params.ebnf"),
        ({"regex": "a", "ebnf": 'root ::= "a"'}, "sampling_params.regex"),
    ):
        body = {"text": "Hi", "sampling_params": {"max_new_tokens": 5, **constraint}}
        reply = requests.post(f"{server.base_url}/generate", json=body, timeout=60)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == param
