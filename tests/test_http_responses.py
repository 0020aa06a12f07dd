"""/v1/responses through the official openai client, against the live server; plus the pieces that need no
server (the Hermes tool-call parser, the response store's bounds)."""

from __future__ import annotations

import json
import time

import jsonschema
import openai
import pytest

from http_api.protocol_openai.responses_output import ResponseObject
from http_api.response_store import ResponseStore, StoredResponse
from http_api.tool_calls import safe_prefix_len, split_calls

LLM = "smollm2-135m-instruct"
FRANCE = "What is the capital of France?"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def create(openai_client, **kwargs):
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_output_tokens", 40)
    return openai_client.responses.create(model=LLM, **kwargs)


def test_answer_mentions_paris(openai_client):
    response = create(openai_client, input=FRANCE)
    assert "paris" in response.output_text.lower()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == LLM
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_") and message.content[0].type == "output_text"
    usage = response.usage
    assert usage.input_tokens > 5 and 0 < usage.output_tokens <= 40
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.temperature == 0 and response.max_output_tokens == 40


def test_text_format_json_schema_is_followed(openai_client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "continent": {"enum": ["Europe", "Asia", "Africa"]}},
        "required": ["city", "continent"],
    }
    response = create(
        openai_client, input=FRANCE, max_output_tokens=200,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )  # fmt: skip
    assert response.status == "completed", response.output_text
    answer = json.loads(response.output_text)
    jsonschema.validate(answer, schema)
    assert set(answer) == {"city", "continent"} and "paris" in answer["city"].lower()


def test_input_items_and_instructions(openai_client):
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "What is the capital"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "of France?"}]},
    ]
    response = create(openai_client, input=items, instructions="Answer in one short sentence.")
    assert "paris" in response.output_text.lower()
    assert response.instructions == "Answer in one short sentence."


def test_stream_events_and_deltas(openai_client):
    events = []
    with openai_client.responses.stream(
        model=LLM, input=FRANCE, temperature=0, max_output_tokens=40
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    collapsed = [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]
    assert collapsed == STREAM_ORDER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and "paris" in deltas.lower()
    assert final.output_text == create(openai_client, input=FRANCE).output_text
    assert events[0].response.status == "in_progress" and final.status == "completed"
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}
    assert openai_client.responses.retrieve(final.id).output_text == final.output_text  # stored


def test_stream_cut_short_is_incomplete(openai_client):
    with openai_client.responses.stream(
        model=LLM, input=FRANCE, temperature=0, max_output_tokens=3
    ) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_previous_response_id_continues_the_conversation(openai_client):
    first = create(openai_client, input=FRANCE)
    assert "paris" in first.output_text.lower()
    again = "Repeat your last answer."
    second = create(openai_client, input=again, previous_response_id=first.id)
    alone = create(openai_client, input=again)  # the same turn with no memory of the first
    assert "paris" in second.output_text.lower()
    assert "paris" not in alone.output_text.lower()
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens


def test_get_and_delete(openai_client, http, server):
    response = create(openai_client, input=FRANCE)
    fetched = openai_client.responses.retrieve(response.id)
    assert fetched.id == response.id and fetched.output_text == response.output_text
    openai_client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)
    gone = http.delete(f"{server.base_url}/v1/responses/{response.id}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "response_not_found"


def test_unstored_response_is_not_kept(openai_client):
    response = create(openai_client, input=FRANCE, store=False)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)


def test_unknown_previous_response_id_is_404(openai_client):
    with pytest.raises(openai.NotFoundError) as info:
        create(openai_client, input="Hello", previous_response_id="resp_does_not_exist")
    assert info.value.body["param"] == "previous_response_id"


BAD = [
    ({"input": []}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "objekt"}}}},
     "text.format.schema"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"input": "x", "tools": [WEATHER_TOOL], "tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"input": "x", "tools": [WEATHER_TOOL], "tool_choice": "required", "text": {"format": {"type": "json_object"}}},
     "tool_choice"),
    ({"input": "x", "temperature": 3}, "temperature"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 100000}, "max_output_tokens"),
    ({"input": "x", "background": True, "stream": True}, "background"),
    ({"input": "x", "include": ["message.output_text.logprobs"]}, "include"),
    ({"input": "x", "frobnicate": 1}, "frobnicate"),
    ({"input": "x", "model": "no-such-model"}, "model"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_request_is_an_openai_error(server, http, body, param):
    response = http.post(f"{server.base_url}/v1/responses", json=body)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "name": "get_weather"}], ids=["required", "named"]
)
def test_forced_tool_choice_makes_a_valid_call(openai_client, choice):
    # A joke needs no weather: under "auto" the model answers in text; forced, it must call.
    joke = {"input": "Tell me a joke about cats.", "tools": [WEATHER_TOOL], "max_output_tokens": 120}
    assert not [o for o in create(openai_client, **joke).output if o.type == "function_call"]
    response = create(openai_client, **joke, tool_choice=choice)
    assert response.status == "completed", response.output
    assert response.output and {o.type for o in response.output} == {
        "function_call"
    }  # "required" may call twice
    for call in response.output:
        assert call.name == "get_weather"
        jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["parameters"])
    call = response.output[0]
    assert response.tool_choice == choice or response.tool_choice.name == "get_weather"
    events = list(create(openai_client, **joke, tool_choice=choice, stream=True))
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == call.arguments  # greedy: the same call, streamed
    assert not any(e.type == "response.output_text.delta" for e in events)


def test_function_call_items_go_back_to_the_model(openai_client):
    call = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    output = {"type": "function_call_output", "call_id": "call_1", "output": '{"weather": "sunny, 24 C"}'}
    items = [{"role": "user", "content": "What is the weather in Paris?"}, call, output]
    response = create(openai_client, input=items, tools=[WEATHER_TOOL])
    assert response.status in ("completed", "incomplete") and response.output
    assert response.tools[0].name == "get_weather"


def test_background_run_and_cancel(openai_client):
    queued = create(openai_client, input=FRANCE, background=True)
    assert queued.status == "queued" and queued.background
    deadline = time.monotonic() + 60
    while (done := openai_client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert done.status == "completed" and "paris" in done.output_text.lower()
    long = create(openai_client, input="Tell me a very long story.", background=True, max_output_tokens=1500)
    cancelled = openai_client.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert openai_client.responses.retrieve(long.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        openai_client.responses.cancel(create(openai_client, input=FRANCE).id)  # not a background one


def test_x_request_id_is_echoed_and_used(server, http):
    headers = {"X-Request-Id": "trace-42"}
    body = {"model": LLM, "input": FRANCE, "max_output_tokens": 8}
    response = http.post(f"{server.base_url}/v1/responses", json=body, headers=headers)
    assert response.headers["X-Request-Id"] == "trace-42" and response.json()["id"] == "resp_trace-42"
    chat = {"model": LLM, "messages": [{"role": "user", "content": FRANCE}], "max_tokens": 4}
    response = http.post(f"{server.base_url}/v1/chat/completions", json=chat, headers=headers)
    assert response.headers["X-Request-Id"] == "trace-42" and response.json()["id"] == "chatcmpl-trace-42"
    response = http.post(
        f"{server.base_url}/v1/completions",
        json={"model": LLM, "prompt": "Hi", "max_tokens": 2},
        headers=headers,
    )
    assert response.json()["id"] == "cmpl-trace-42"
    bad = http.post(f"{server.base_url}/v1/responses", json=body, headers={"X-Request-Id": "a b"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Request-Id"


# ---- no server ----


def test_split_calls():
    names = {"get_weather"}
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    rest, calls = split_calls(text, names)
    assert rest == "Let me check.\n" and len(calls) == 1
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    unclosed = '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
    assert split_calls(unclosed, names) == ("", [calls[0].__class__("get_weather", '{"city": "Rome"}')])
    unknown = '<tool_call>{"name": "launch", "arguments": {}}</tool_call>'
    assert split_calls(unknown, names) == (unknown, [])
    assert split_calls("<tool_call>not json</tool_call>", names)[1] == []


def test_safe_prefix_len():
    assert safe_prefix_len("Hello") == 5
    assert safe_prefix_len("Hello <tool") == 6
    assert safe_prefix_len("Hi <tool_call>{") == 3
    assert safe_prefix_len("a < b") == 5


def stored(rid: str) -> StoredResponse:
    body = ResponseObject(id=rid, created_at=0, status="completed", model=LLM, temperature=1, top_p=1)
    return StoredResponse(body, [])


def test_store_bounds_size_and_age():
    now = [0.0]
    store = ResponseStore(max_entries=2, ttl_s=10, clock=lambda: now[0])
    for rid in ("a", "b", "c"):
        store.put(stored(rid))
        now[0] += 1
    assert store.get("a") is None and store.get("b") is not None and len(store) == 2
    now[0] = 11.5  # b was stored at 1, c at 2
    assert store.get("b") is None and store.get("c") is not None
    now[0] = 12.5
    assert len(store) == 0
