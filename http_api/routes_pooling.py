"""Pooling models: POST /v1/embeddings, /pooling, /classify, /score, and /rerank (/v1/rerank, /v2/rerank).

Every route hands the engine one PoolingRequest; the engine's pooling lane batches the inputs of all of
them together. Bad input is a 400 in the OpenAI error shape, named by the field the route's body used.
"""

from __future__ import annotations

from aiohttp import web

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from http_api.app_keys import ENGINE_KEY
from http_api.errors import APIError, engine_error, invalid_parameter, model_not_found, parse_model, read_json
from http_api.protocol_openai.embeddings import (
    ClassificationData,
    ClassificationRequest,
    ClassificationResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    PoolingBody,
    PoolingData,
    PoolingResponse,
    encode_vector,
    prompt_usage,
)
from http_api.protocol_openai.scoring import (
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankResultDocument,
    RerankUsage,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
)


def require_pooling(engine: EngineClient, model: str | None) -> PoolingModelInfo:
    """The pooling model a request names (the first served when it names none); 404 otherwise."""
    models = engine.pooling_models
    if not models:
        raise APIError(
            "This server serves no pooling model (it was started with --embed none)",
            status=404,
            param="model",
            code="model_not_found",
        )
    if model is None:
        return next(iter(models.values()))
    if model not in models:
        raise model_not_found(model)
    return models[model]


async def run_pooling(
    engine: EngineClient, request: PoolingRequest, rename: dict[str, str] | None = None
) -> PoolingOutput:
    try:
        return await engine.pool(request)
    except InvalidParameter as exc:
        raise invalid_parameter(exc, rename) from exc
    except Exception as exc:
        raise engine_error(exc) from exc


def embedding_request(req: EmbeddingRequest, model: str, task: str = "embed") -> PoolingRequest:
    messages = [m.to_template(i) for i, m in enumerate(req.messages)] if req.messages is not None else None
    add_special = req.add_special_tokens if req.add_special_tokens is not None else messages is None
    return PoolingRequest(
        task,  # type: ignore[arg-type]
        inputs=req.inputs(),
        messages=messages,
        add_generation_prompt=req.add_generation_prompt,
        model=model,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
        truncation_side=req.truncation_side or "right",
        add_special_tokens=add_special,
        activation=req.activation(),
        dimensions=req.dimensions,
    )


async def embeddings(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    req = parse_model(EmbeddingRequest, await read_json(request))
    model = require_pooling(engine, req.model)
    out = await run_pooling(engine, embedding_request(req, model.name))
    data = [
        EmbeddingData(index=i, embedding=encode_vector(v, req.encoding_format))
        for i, v in enumerate(out.data)
    ]
    body = EmbeddingResponse(model=model.name, data=data, usage=prompt_usage(out.prompt_tokens))
    return web.json_response(body.model_dump())


async def pooling(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    req = parse_model(PoolingBody, await read_json(request))
    model = require_pooling(engine, req.model)
    out = await run_pooling(engine, embedding_request(req, model.name, req.task or model.kind))
    data = [PoolingData(index=i, data=encode_vector(v, req.encoding_format)) for i, v in enumerate(out.data)]
    body = PoolingResponse(model=model.name, data=data, usage=prompt_usage(out.prompt_tokens))
    return web.json_response(body.model_dump())


async def classify(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    req = parse_model(ClassificationRequest, await read_json(request))
    model = require_pooling(engine, req.model)
    pooling_request = PoolingRequest(
        "classify",
        inputs=req.inputs(),
        model=model.name,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
        truncation_side=req.truncation_side or "right",
        add_special_tokens=req.add_special_tokens,
        activation=req.use_activation,
    )
    out = await run_pooling(engine, pooling_request)
    data = []
    for i, probs in enumerate(out.data):
        best = int(probs.argmax())
        label = model.labels[best] if best < len(model.labels) else None
        data.append(ClassificationData(index=i, label=label, probs=probs.tolist(), num_classes=len(probs)))
    body = ClassificationResponse(model=model.name, data=data, usage=prompt_usage(out.prompt_tokens))
    return web.json_response(body.model_dump())


async def score(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    req = parse_model(ScoreRequest, await read_json(request))
    model = require_pooling(engine, req.model)
    pairs, names = req.pairs()
    out = await run_pooling(engine, score_request(req, model.name, pairs), names)
    data = [ScoreData(index=i, score=s) for i, s in enumerate(out.scores)]
    body = ScoreResponse(model=model.name, data=data, usage=prompt_usage(out.prompt_tokens))
    return web.json_response(body.model_dump())


def score_request(
    req: ScoreRequest | RerankRequest, model: str, pairs: list[tuple[str, str]]
) -> PoolingRequest:
    return PoolingRequest(
        "score",
        pairs=pairs,
        model=model,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
        truncation_side=req.truncation_side or "right",
        activation=req.use_activation,
    )


async def rerank(request: web.Request) -> web.Response:
    """Jina's and Cohere's rerank: the documents by relevance to the query, best first."""
    engine = request.app[ENGINE_KEY]
    req = parse_model(RerankRequest, await read_json(request))
    model = require_pooling(engine, req.model)
    texts = req.texts()
    pairs = [(req.query, text) for text in texts]
    out = await run_pooling(
        engine, score_request(req, model.name, pairs), {"text_1": "query", "text_2": "documents"}
    )
    order = sorted(range(len(texts)), key=lambda i: out.scores[i], reverse=True)
    if req.top_n:
        order = order[: req.top_n]
    results = [
        RerankResult(
            index=i,
            document=RerankResultDocument(text=texts[i]) if req.return_documents else None,
            relevance_score=out.scores[i],
        )
        for i in order
    ]
    usage = RerankUsage(prompt_tokens=out.prompt_tokens, total_tokens=out.prompt_tokens)
    body = RerankResponse(model=model.name, usage=usage, results=results)
    return web.json_response(body.model_dump(exclude_none=True))


def add_pooling_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/pooling", pooling)
    app.router.add_post("/classify", classify)
    app.router.add_post("/score", score)
    app.router.add_post("/v1/score", score)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        app.router.add_post(path, rerank)
