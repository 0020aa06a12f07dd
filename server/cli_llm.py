"""`rtserve serve` flags for how the LLM is served: its names, its default sampling values, and the
Responses API's store."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.models.generation_config import HF_KEYS, parse_override
from http_api.limits import HTTPLimits
from server.cli_types import non_negative_int, positive_float


def generation_config_arg(text: str) -> str:
    if text in ("auto", "none"):
        return text
    path = Path(text)
    if not (path.is_file() or (path / "generation_config.json").is_file()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither 'auto', 'none', a generation_config.json nor a directory holding one"
        )
    return text


def override_arg(text: str) -> dict[str, float]:
    try:
        return parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_llm_serving_args(p: argparse.ArgumentParser, limits: HTTPLimits) -> None:
    group = p.add_argument_group("LLM serving")
    group.add_argument(
        "--served-model-name", nargs="+", metavar="NAME",
        help="names the LLM answers to (as vLLM: the first is the name replies report; every one is accepted "
        "and listed by /v1/models); default: the --llm name",
    )  # fmt: skip
    group.add_argument(
        "--generation-config", type=generation_config_arg, default="auto", metavar="auto|none|PATH",
        help="default sampling values for requests that leave them unset: 'auto' reads the model's own "
        "(generation_config.json, GGUF metadata; for the embedded SmolLM2, defaults measured on its weights, "
        "see the README), 'none' keeps temperature 1 and top_p 1, PATH reads that generation_config.json "
        "(or the one in that directory). A request's own values always win; /v1/models shows the defaults",
    )  # fmt: skip
    group.add_argument(
        "--override-generation-config", type=override_arg, default=None, metavar="JSON",
        help=f"set default sampling values over --generation-config's, e.g. '{{\"temperature\": 0.5}}'; "
        f"keys: {', '.join(HF_KEYS)}",
    )  # fmt: skip
    group.add_argument(
        "--responses-store-size", type=non_negative_int, default=limits.responses_store_size, metavar="N",
        help="/v1/responses keeps at most this many responses in memory (for GET, previous_response_id and "
        "background runs); the oldest go first. Each holds one conversation, at most --max-model-len tokens",
    )  # fmt: skip
    group.add_argument(
        "--responses-store-ttl", type=positive_float, default=limits.responses_store_ttl, metavar="SECONDS",
        help="a stored response is forgotten this many seconds after it was created (a background run "
        "still going then is cancelled)",
    )  # fmt: skip
