"""Default sampling values (--generation-config, --override-generation-config) and model aliases
(--served-model-name): what a request that leaves them unset gets, and that its own values win."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from engine.models.generation_config import (
    SHIPPED_DIR,
    parse_override,
    resolve_generation_defaults,
    sampling_values,
)
from server.cli import main as rtserve_main
from tests.conftest import start_server

LLM = "smollm2-135m-instruct"
CAPITALS = {"France": "paris", "Japan": "tokyo", "Germany": "berlin"}


def shipped_defaults() -> dict[str, float | int]:
    return sampling_values(json.loads((SHIPPED_DIR / f"{LLM}.json").read_text()), "shipped")


def test_default_sampling_answers_known_capitals(openai_client):
    """The README's first request, with no sampling values: at least five of six answers are right."""
    right, answers = 0, []
    for country, capital in CAPITALS.items():
        for _ in range(2):
            reply = openai_client.chat.completions.create(
                model=LLM,
                messages=[{"role": "user", "content": f"What is the capital of {country}?"}],
                max_tokens=40,
            )
            text = reply.choices[0].message.content
            answers.append(text)
            right += capital in text.lower()
    assert right >= 5, answers


def test_models_and_responses_show_the_defaults(openai_client, server, http):
    defaults = shipped_defaults()
    assert 0 < defaults["temperature"] < 1  # measured, see the README
    cards = {card["id"]: card for card in http.get(f"{server.base_url}/v1/models").json()["data"]}
    assert cards[LLM]["generation_defaults"] == defaults
    unset = openai_client.responses.create(model=LLM, input="Hi", max_output_tokens=2)
    assert unset.temperature == defaults["temperature"] and unset.top_p == defaults.get("top_p", 1.0)
    given = openai_client.responses.create(
        model=LLM, input="Hi", max_output_tokens=2, temperature=1.0, top_p=1.0
    )
    assert given.temperature == 1.0 and given.top_p == 1.0  # the request's own values win


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A server with defaults from a file, one overridden, and two names for its LLM."""
    config = tmp_path_factory.mktemp("genconfig") / "generation_config.json"
    config.write_text(json.dumps({"temperature": 0.0, "top_p": 0.5, "max_new_tokens": 12, "do_sample": True}))
    args = [
        "--asr", "none", "--embed", "none", "--generation-config", str(config),
        "--override-generation-config", '{"top_p": 0.8}', "--served-model-name", "smol", "smol-alias",
    ]  # fmt: skip
    process = start_server(args, "server-generation-config.log")
    try:
        yield process.base_url, process.log_path
    finally:
        process.stop()


def test_configured_defaults_and_aliases(configured):
    base_url, log_path = configured
    cards = requests.get(f"{base_url}/v1/models", timeout=10).json()["data"]
    assert [card["id"] for card in cards] == ["smol", "smol-alias"]
    assert cards[0]["generation_defaults"] == {"temperature": 0.0, "top_p": 0.8, "max_tokens": 12}
    assert "generation defaults for smollm2-135m-instruct: temperature=0.0 top_p=0.8" in log_path.read_text()
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    first = client.chat.completions.create(
        model="smol-alias", messages=story, extra_body={"ignore_eos": True}
    )
    again = client.chat.completions.create(model="smol", messages=story, extra_body={"ignore_eos": True})
    assert first.model == "smol" and again.model == "smol"  # the first name is the one reported
    assert first.choices[0].message.content == again.choices[0].message.content  # temperature 0 by default
    assert first.usage.completion_tokens == 12  # max_new_tokens: the default where max_tokens is unset
    longer = client.chat.completions.create(
        model="smol", messages=story, max_tokens=20, temperature=1.0, seed=7, extra_body={"ignore_eos": True}
    )
    assert longer.usage.completion_tokens == 20
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=LLM, messages=story, max_tokens=2)


# ---- no server ----


def test_override_is_checked():
    assert parse_override('{"temperature": 0.5, "max_new_tokens": 64}') == {
        "temperature": 0.5,
        "max_new_tokens": 64,
    }
    for bad in ('{"temprature": 0.5}', "[0.5]", '{"top_p": "high"}', "not json"):
        with pytest.raises(ValueError):
            parse_override(bad)
    with pytest.raises(SystemExit) as info:
        rtserve_main(["serve", "--override-generation-config", '{"temprature": 0.5}'])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        rtserve_main(["serve", "--generation-config", "/no/such/generation_config.json"])


def test_resolve(tmp_path):
    assert resolve_generation_defaults("none", {}, LLM, None, 49152).values == {}
    assert resolve_generation_defaults("auto", {}, LLM, None, 49152).values == shipped_defaults()
    overridden = resolve_generation_defaults("none", {"top_k": 40}, LLM, None, 49152)
    assert overridden.values == {"top_k": 40} and "--override-generation-config" in overridden.source
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 5.0}))
    with pytest.raises(ValueError, match="temperature"):
        resolve_generation_defaults(str(tmp_path), {}, LLM, None, 49152)
