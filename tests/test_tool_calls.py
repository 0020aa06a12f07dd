"""Tool calling on /v1/chat/completions with the official openai client: forced calls ("required", a named
function) whose arguments validate against the tool's schema, streamed and not; "auto" parsed from the
model's text; a second turn that answers from the tool's result; bad tools and tool_choice values. The
parsers are also checked on fixed texts, split at every character as a stream would split them."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from engine.llm.chat import load_chat_template
from http_api.chat_choices import ReplyRules, ReplyStream, split_reply
from http_api.errors import APIError
from http_api.tool_calls import ToolSettings, plan_tools
from http_api.tool_parsers import tool_parser
from http_api.tool_parsers.forced import scan_calls

LLM = "smollm2-135m-instruct"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": WEATHER_PARAMS,
    },
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Get the time in a timezone", "parameters": TIME_PARAMS},
}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]
SETTINGS = ToolSettings("hermes", True)


def call_message(city: str, i: int) -> dict:
    arguments = json.dumps({"city": city, "unit": "celsius"})
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


# Two earlier calls in the history: enough for the 135M model to answer a third question with a call
FEW_SHOT = [
    {"role": "user", "content": "What is the weather in London?"},
    call_message("London", 1),
    {"role": "user", "content": "What is the weather in Madrid?"},
    call_message("Madrid", 2),
]


def ask(client: openai.OpenAI, **kwargs):
    kwargs.setdefault("max_tokens", 48)
    return client.chat.completions.create(model=LLM, temperature=0, **kwargs)


def streamed_calls(client: openai.OpenAI, **kwargs) -> tuple[list[dict], str | None]:
    """The tool calls a stream sends, joined; checks each call's first delta names it."""
    calls: dict[int, dict] = {}
    finish = None
    for chunk in ask(client, stream=True, **kwargs):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                if delta.index not in calls:
                    assert delta.id and delta.id.startswith("call_") and delta.type == "function"
                    assert delta.function.name, "a call's first delta carries its name"
                    calls[delta.index] = {"name": delta.function.name, "arguments": ""}
                calls[delta.index]["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)], finish


# ------------------------------------------------------------------------------------ live: forced calls


def test_required_call_validates(openai_client):
    reply = ask(
        openai_client, messages=QUESTION, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)


def test_required_call_streamed(openai_client):
    calls, finish = streamed_calls(
        openai_client, messages=QUESTION, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False
    )
    assert finish == "tool_calls"
    assert calls and calls[0]["name"] == "get_weather"
    for call in calls:
        jsonschema.validate(json.loads(call["arguments"]), WEATHER_PARAMS)


def test_named_tool_choice(openai_client):
    choice = {"type": "function", "function": {"name": "get_time"}}
    kwargs = {
        "messages": QUESTION,
        "tools": [WEATHER, TIME],
        "tool_choice": choice,
        "parallel_tool_calls": False,
    }
    reply = ask(openai_client, **kwargs)
    calls = reply.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME_PARAMS)
    streamed, finish = streamed_calls(openai_client, **kwargs)
    assert [c["name"] for c in streamed] == ["get_time"] and finish == "tool_calls"
    jsonschema.validate(json.loads(streamed[0]["arguments"]), TIME_PARAMS)


# ------------------------------------------------------------------------------------ live: auto, answers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_call_parsed_from_text(openai_client, stream):
    messages = [*FEW_SHOT, {"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        calls, finish = streamed_calls(openai_client, messages=messages, tools=[WEATHER])
    else:
        choice = ask(openai_client, messages=messages, tools=[WEATHER]).choices[0]
        calls = [
            {"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls
        ]
        finish = choice.finish_reason
    assert finish == "tool_calls"
    assert [c["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["arguments"])["city"] == "Paris"


def test_tool_result_gets_a_text_answer(openai_client):
    result = {
        "role": "tool",
        "tool_call_id": "call_9",
        "content": json.dumps({"temperature": 22, "condition": "sunny"}),
    }
    messages = [*QUESTION, call_message("Paris", 9), result]
    choice = ask(openai_client, messages=messages, tools=[WEATHER]).choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    assert "sunny" in choice.message.content.lower()


def test_tool_choice_none_shows_no_calls(openai_client):
    messages = [*FEW_SHOT, {"role": "user", "content": "What is the weather in Paris?"}]
    choice = ask(
        openai_client, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=12
    ).choices[0]
    assert not choice.message.tool_calls and choice.finish_reason in ("stop", "length")
    assert "<tool_call>" in choice.message.content  # the model's text, left as it is


def test_tool_history_renders(http, server):
    """Calls and results in the history go through the tool template: a `tool` turn, <tool_call> tags."""
    result = {"role": "tool", "tool_call_id": "call_9", "content": "22 degrees"}
    body = {"messages": [*QUESTION, call_message("Paris", 9), result]}
    tokens = http.post(f"{server.base_url}/tokenize", json=body).json()["tokens"]
    prompt = http.post(f"{server.base_url}/detokenize", json={"tokens": tokens}).json()["prompt"]
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
        in prompt
    )
    assert "<|im_start|>tool\n22 degrees<|im_end|>" in prompt


BAD_TOOLS = {
    "tool_choice names a missing tool": (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_stock_price"}}},
        "tool_choice",
    ),
    "parameters not a schema": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
        "tools[0].function.parameters",
    ),
    "parameters not an object": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": ["city"]}}]},
        "tools[0].function.parameters",
    ),
    "parameters for a string": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
        "tools[0].function.parameters",
    ),
    "required without tools": ({"tool_choice": "required"}, "tool_choice"),
    "tool_choice unknown": ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
}


@pytest.mark.parametrize("case", BAD_TOOLS.values(), ids=BAD_TOOLS.keys())
def test_bad_tools_are_400(openai_client, case):
    fields, param = case
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=LLM, messages=QUESTION, max_tokens=2, **fields)
    error = caught.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert ask(openai_client, messages=QUESTION, max_tokens=2).choices[0].message.content  # still serving


# ------------------------------------------------------------------------------------ parsers, fixed texts


def stream_split(text: str, rules: ReplyRules, step: int) -> tuple[str, list[dict]]:
    stream, content, calls = ReplyStream(rules), "", {}
    deltas = [d for i in range(0, len(text), step) for d in stream.feed(text[i : i + step])] + stream.finish()
    for delta in deltas:
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"name": piece.function.name, "arguments": ""})
            call["arguments"] += piece.function.arguments or ""
    return content, [calls[i] for i in sorted(calls)]


HERMES_TEXT = (
    'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
    '</tool_call>\n<tool_call>{"name": "nope", "arguments": {}}</tool_call><tool_call>{"name": "get_time", '
    '"arguments": "{\\"timezone\\": \\"UTC\\"}"}</tool_call>'
)


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_hermes_parser_whole_and_split(step):
    rules = ReplyRules(None, False, tools=plan_tools([WEATHER, TIME], "auto", None, SETTINGS))
    whole = split_reply(HERMES_TEXT, rules)
    assert whole.content.startswith("Let me check. ") and "nope" in whole.content  # unknown function: text
    assert [(c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("get_time", {"timezone": "UTC"}),
    ]
    content, calls = stream_split(HERMES_TEXT, rules, step)
    assert content == whole.content
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole.tool_calls
    ]


def test_hermes_holds_back_a_partial_tag():
    parser = tool_parser("hermes")
    assert parser.content_prefix_len("Sure <tool_c") == len("Sure ")
    assert parser.content_prefix_len("a < b") == len("a < b")
    text, calls = parser.extract(
        '<tool_call>{"name": "get_weather", "arguments": {"city": 1}}', {"get_weather"}
    )
    assert calls and text == ""  # an unclosed final call still counts, as vLLM reads it


def test_llama3_json_parser():
    parser = tool_parser("llama3_json")
    names = {"get_weather", "get_time"}
    text = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}; {"name": "get_time", "parameters": {}}'
    content, calls = parser.extract(text, names)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {}),
    ]
    assert parser.extract("Oslo is cold.", names) == ("Oslo is cold.", [])
    assert parser.extract('{"name": "unknown", "parameters": {}}', names)[1] == []
    assert parser.content_prefix_len(' {"na') == 0 and parser.content_prefix_len("Hello") == 5


FORCED_TEXT = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa{r}is \\"x\\"", "unit": "celsius"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"timezone": "}{"}}\n</tool_call>'
)


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_forced_calls_stream_exact_arguments(step):
    rules = ReplyRules(None, False, tools=plan_tools([WEATHER, TIME], "required", None, SETTINGS))
    content, calls = stream_split(FORCED_TEXT, rules, step)
    assert content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": 'Pa{r}is "x"', "unit": "celsius"}),
        ("get_time", {"timezone": "}{"}),
    ]
    assert [c.arguments for c in scan_calls(FORCED_TEXT)] == [c["arguments"] for c in calls]


def test_forced_grammar_names_the_tools():
    named = plan_tools(
        [WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}}, None, SETTINGS
    )
    assert named.structured.kind == "grammar" and '"get_time"' in named.structured.spec
    assert '"get_weather"' not in named.structured.spec and "call)*" not in named.structured.spec
    required = plan_tools([WEATHER, TIME], "required", False, SETTINGS)
    assert '"get_weather"' in required.structured.spec and "call)*" not in required.structured.spec
    parallel = plan_tools([WEATHER, TIME], "required", True, SETTINGS)
    assert "call)*" in parallel.structured.spec
    with pytest.raises(APIError, match="enable-auto-tool-choice"):
        plan_tools([WEATHER], "auto", None, ToolSettings("hermes", False))


def test_chat_template_flag_values(tmp_path):
    path = tmp_path / "template.jinja"
    path.write_text("{{ messages[0]['content'] }}")
    assert load_chat_template(str(path)) == "{{ messages[0]['content'] }}"
    assert load_chat_template("{{ 'a' }}\\n") == "{{ 'a' }}\n"  # inline, escapes read as vLLM reads them
    with pytest.raises(ValueError, match="file path"):
        load_chat_template(str(tmp_path / "missing.jinja"))
    with pytest.raises(ValueError, match="not valid Jinja"):
        load_chat_template("{% for %}")


def test_serve_flags_reach_the_settings(capsys):
    import argparse

    from server.cli import add_serve_parser, engine_config, server_settings

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    flags = [
        "--tool-call-parser",
        "llama3_json",
        "--no-enable-auto-tool-choice",
        "--reasoning-parser",
        "deepseek-r1",
    ]
    args = parser.parse_args(["serve", *flags, "--chat-template", "{{ messages[0]['content'] }}"])
    http = server_settings(args).http
    assert (http.tool_call_parser, http.enable_auto_tool_choice, http.reasoning_parser) == (
        "llama3_json",
        False,
        "deepseek-r1",
    )
    assert engine_config(args).chat_template == "{{ messages[0]['content'] }}"
    defaults = server_settings(parser.parse_args(["serve"])).http
    assert (defaults.tool_call_parser, defaults.enable_auto_tool_choice, defaults.reasoning_parser) == (
        "hermes",
        True,
        None,
    )
    for bad in (
        ["--tool-call-parser", "mistral"],
        ["--reasoning-parser", "o1"],
        ["--chat-template", "nope.jinja"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", *bad])
    assert "unknown tool-call parser" in capsys.readouterr().err
