"""LoRA adapters served beside the LLM, checked token for token against PEFT.

The adapters are made here with PEFT on the embedded SmolLM2 (no adapter ships on the registry), with
random non-zero A and B at different ranks and target modules, one with rsLoRA, and saved to temp dirs.
The reference is PEFT's own model (HF LlamaForCausalLM on the same fp32 weights the server loads) with
greedy decoding; the server runs them mixed with base rows in one continuous batch.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
import requests
import torch

from engine.config import default_cache_dir
from engine.models.llm_loader import load_llm
from tests.conftest import start_server

BASE = "smollm2-135m-instruct"
HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
NEW_TOKENS = 10
NO_EOS = {"ignore_eos": True}  # PEFT's reference runs on past EOS too
EOS = 2  # <|im_end|>: a chat reply ends there
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "SELECT name FROM users WHERE",
    "My favourite colour is",
    "The three primary colours are red,",
]
LONG_PROMPT = "Here is a list of fruits: " + ", ".join(["apple", "banana", "cherry", "grape", "lemon"] * 10)
ADAPTERS = {  # name: (rank, alpha, target modules, rsLoRA)
    "alpha": (8, 16, ["q_proj", "k_proj", "v_proj", "o_proj"], False),
    "beta": (16, 8, ["v_proj", "gate_proj", "up_proj", "down_proj"], True),
    "gamma": (4, 8, ["q_proj", "v_proj"], False),  # loaded at runtime
    "too_big": (32, 32, ["q_proj"], False),  # over --max-lora-rank 16
}


@dataclass
class Reference:
    model: object  # the PeftModel holding every adapter
    tokenizer: object
    dirs: dict[str, Path]
    done: dict[tuple, list[int]] = field(default_factory=dict)  # each reference is computed once

    def greedy(self, adapter: str | None, ids: list[int], new_tokens: int = NEW_TOKENS) -> list[int]:
        key = (adapter, tuple(ids), new_tokens)
        if key not in self.done:
            self.done[key] = self._generate(adapter, ids, new_tokens)
        return self.done[key]

    def _generate(self, adapter: str | None, ids: list[int], new_tokens: int) -> list[int]:
        model = self.model
        with torch.inference_mode():
            if adapter is None:
                with model.disable_adapter():
                    out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False)
            else:
                model.set_adapter(adapter)
                out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False)
        return out[0, len(ids) :].tolist()

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)


def _randomize(model: object, adapter: str, seed: int) -> None:
    """PEFT starts B at zero (a no-op adapter): give A and B random non-zero values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f".lora_A.{adapter}." in name or f".lora_B.{adapter}." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def _save(model: object, adapter: str, root: Path, base_name: str = HUB_NAME) -> Path:
    model.save_pretrained(str(root), selected_adapters=[adapter])
    where = root / adapter if (root / adapter).is_dir() else root
    config_path = where / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(config))
    return where


def _bad_adapters(reference: Reference, root: Path) -> None:
    """A corrupt safetensors file, an adapter for another model (by name), and one whose shapes fit no
    layer of this model."""
    corrupt = root / "corrupt"
    shutil.copytree(reference.dirs["alpha"], corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not safetensors")
    reference.dirs["corrupt"] = corrupt
    other_name = _save(reference.model, "alpha", root / "other_name", base_name="meta-llama/Llama-3.2-1B")
    reference.dirs["other_name"] = other_name
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=1000))  # fmt: skip
    other = get_peft_model(tiny, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    reference.dirs["other_shapes"] = _save(other, "default", root / "other_shapes", base_name=HUB_NAME)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    from peft import LoraConfig, get_peft_model

    bundle = load_llm(BASE, default_cache_dir(), "cpu")  # the fp32 weights the server loads too
    root = tmp_path_factory.mktemp("lora")
    peft_model = None
    dirs: dict[str, Path] = {}
    for seed, (name, (rank, alpha, targets, rslora)) in enumerate(ADAPTERS.items()):
        config = LoraConfig(
            r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, use_rslora=rslora
        )
        if peft_model is None:
            peft_model = get_peft_model(bundle.model, config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
        _randomize(peft_model, name, seed)
        dirs[name] = _save(peft_model, name, root / name)
    peft_model.eval()
    bundle.model.generation_config.eos_token_id = None  # the server's requests run with ignore_eos
    ref = Reference(peft_model, bundle.tokenizer, dirs)
    _bad_adapters(ref, root)
    return ref


@pytest.fixture(scope="module")
def lora_server(reference: Reference) -> Iterator[str]:
    args = [
        "--asr", "none", "--embed", "none", "--tts", "none", "--quantize", "none",  # fp32, as PEFT's
        "--lora-modules", f"alpha={reference.dirs['alpha']}", "--lora-paths", f"beta={reference.dirs['beta']}",
        "--max-loras", "2", "--max-lora-rank", "16", "--enable-lora-runtime-updates",
    ]  # fmt: skip
    process = start_server(args, "server-lora.log")
    try:
        yield process.base_url
    finally:
        process.stop()


def _generate(base_url: str, input_ids: list[list[int]], lora_path: list[str | None]) -> list[list[int]]:
    body = {
        "input_ids": input_ids, "lora_path": lora_path,
        "sampling_params": {"temperature": 0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True},
    }  # fmt: skip
    response = requests.post(f"{base_url}/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return [item["output_ids"] for item in response.json()]


def test_each_adapter_alone_matches_peft(lora_server, reference):
    ids = reference.ids(PROMPTS[0])
    base = reference.greedy(None, ids)
    for name in ("alpha", "beta"):
        expected = reference.greedy(name, ids)
        assert expected != base, f"adapter {name} should change the output (the test must be able to fail)"
        assert _generate(lora_server, [ids], [name]) == [expected], name
    long_ids = reference.ids(LONG_PROMPT)  # one adapter's prefill over 64 rows: the per-slot matmul path
    assert _generate(lora_server, [long_ids], ["beta"]) == [reference.greedy("beta", long_ids)]


def test_batch_of_16_mixing_base_and_two_adapters(lora_server, reference):
    names = [None, "alpha", "beta", None, "beta", "beta", "alpha", "alpha"] * 2
    prompts = [reference.ids(PROMPTS[i % 4]) for i in range(16)]  # 8 different (prompt, adapter) pairs
    expected = [reference.greedy(name, ids) for name, ids in zip(names, prompts, strict=True)]
    assert len({tuple(e) for e in expected}) == 8  # the adapters make different outputs
    assert _generate(lora_server, prompts, names) == expected


def test_openai_client_both_naming_styles_streamed_and_not(lora_server, reference):
    client = openai.OpenAI(base_url=f"{lora_server}/v1", api_key="unused", max_retries=0)
    prompt = PROMPTS[2]
    tokenizer = reference.tokenizer
    for model, adapter in (("alpha", "alpha"), (f"{BASE}:beta", "beta")):
        expected = tokenizer.decode(reference.greedy(adapter, reference.ids(prompt)))
        reply = client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=NEW_TOKENS,
            temperature=0,
            n=2,
            logprobs=1,
            extra_body=NO_EOS,
        )
        assert reply.model == model
        assert [c.text for c in reply.choices] == [expected, expected]
        assert len(reply.choices[0].logprobs.tokens) == NEW_TOKENS
        stream = client.completions.create(
            model=model, prompt=prompt, max_tokens=NEW_TOKENS, temperature=0, stream=True, extra_body=NO_EOS
        )
        assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == expected
    messages = [{"role": "user", "content": "Name a colour."}]
    chat_ids = requests.post(f"{lora_server}/tokenize", json={"messages": messages}, timeout=30).json()[
        "tokens"
    ]
    expected_ids = reference.greedy("beta", chat_ids)
    expected_ids = expected_ids[: expected_ids.index(EOS)] if EOS in expected_ids else expected_ids
    expected = tokenizer.decode(expected_ids)
    for model, stream in (("beta", False), (f"{BASE}:beta", True)):
        kwargs = {"model": model, "messages": messages, "max_tokens": NEW_TOKENS, "temperature": 0}
        if stream:
            chunks = client.chat.completions.create(**kwargs, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        assert text == expected, (model, text, expected)


def test_models_list_adapters_and_unknown_adapter_is_404(lora_server):
    cards = {c["id"]: c for c in requests.get(f"{lora_server}/v1/models", timeout=10).json()["data"]}
    assert cards["alpha"]["parent"] == BASE and cards["beta"]["parent"] == BASE
    client = openai.OpenAI(base_url=f"{lora_server}/v1", api_key="unused", max_retries=0)
    for model in ("nope", f"{BASE}:nope", "other-model:alpha"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "model_not_found", model
    response = requests.post(f"{lora_server}/generate", json={"text": "hi", "lora_path": "nope"}, timeout=30)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_bad_adapters_are_400_on_load_and_the_server_keeps_serving(lora_server, reference):
    url = f"{lora_server}/v1/load_lora_adapter"
    for name, words in (("too_big", "rank 32"), ("corrupt", "cannot read"), ("other_name", "Llama-3.2-1B"),
                        ("other_shapes", "another model")):  # fmt: skip
        response = requests.post(
            url, json={"lora_name": name, "lora_path": str(reference.dirs[name])}, timeout=60
        )
        assert response.status_code == 400, (name, response.text)
        assert words in response.json()["error"]["message"], (name, response.text)
    sglang = requests.post(
        f"{lora_server}/load_lora_adapter",
        json={"lora_name": "c2", "lora_path": str(reference.dirs["corrupt"])},
    )
    assert sglang.status_code == 400 and sglang.json()["success"] is False
    assert set(sglang.json()["loaded_adapters"]) == {"alpha", "beta"}
    missing = requests.post(f"{lora_server}/v1/unload_lora_adapter", json={"lora_name": "gamma"}, timeout=30)
    assert missing.status_code == 404
    ids = reference.ids(PROMPTS[1])
    assert _generate(lora_server, [ids, ids], [None, "alpha"]) == [
        reference.greedy(None, ids), reference.greedy("alpha", ids),
    ]  # fmt: skip


async def _stream_text(
    client: openai.AsyncOpenAI, model: str, prompt: str, tokens: int, started: asyncio.Event
) -> str:
    stream = await client.completions.create(
        model=model, prompt=prompt, max_tokens=tokens, temperature=0, stream=True,
        extra_body=NO_EOS,
    )  # fmt: skip
    text = ""
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
            started.set()
    return text


async def test_runtime_load_while_serving_then_unload_lets_running_requests_finish(lora_server, reference):
    client = openai.AsyncOpenAI(base_url=f"{lora_server}/v1", api_key="unused", max_retries=0)
    tokens = 40
    base_started, gamma_started = asyncio.Event(), asyncio.Event()
    base_run = asyncio.create_task(_stream_text(client, BASE, PROMPTS[3], tokens, base_started))
    await base_started.wait()
    loop = asyncio.get_running_loop()
    body = {"lora_name": "gamma", "lora_path": str(reference.dirs["gamma"])}
    load = await loop.run_in_executor(
        None, lambda: requests.post(f"{lora_server}/v1/load_lora_adapter", json=body)
    )
    assert load.status_code == 200 and "gamma" in load.text
    gamma_run = asyncio.create_task(_stream_text(client, "gamma", PROMPTS[4], tokens, gamma_started))
    await gamma_started.wait()
    unload = await loop.run_in_executor(
        None, lambda: requests.post(f"{lora_server}/v1/unload_lora_adapter", json={"lora_name": "gamma"})
    )
    assert unload.status_code == 200
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="gamma", prompt="hi", max_tokens=2)
    tokenizer = reference.tokenizer
    gamma_ids = reference.greedy("gamma", reference.ids(PROMPTS[4]), tokens)
    assert await gamma_run == tokenizer.decode(gamma_ids, skip_special_tokens=True)
    base_ids = reference.greedy(None, reference.ids(PROMPTS[3]), tokens)
    assert await base_run == tokenizer.decode(base_ids, skip_special_tokens=True)
    again = requests.post(f"{lora_server}/unload_lora_adapter", json={"lora_name": "gamma"}, timeout=30)
    assert again.status_code == 404 and again.json()["success"] is False
    await client.close()
