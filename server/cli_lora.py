"""`rtserve serve` flags for LoRA adapters served beside the LLM (vLLM's and SGLang's spellings)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from server.cli_types import positive_int


def lora_module(text: str) -> tuple[str, str]:
    """One adapter: NAME=PATH, vLLM's JSON {"name", "path"}, SGLang's JSON {"lora_name", "lora_path"}, or
    a bare PATH (SGLang: the path is also the name)."""
    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON: {exc}") from None
        name, path = spec.get("name", spec.get("lora_name")), spec.get("path", spec.get("lora_path"))
        if not isinstance(name, str) or not isinstance(path, str):
            raise argparse.ArgumentTypeError(f'{text!r}: expected {{"name": ..., "path": ...}}')
        return name, path
    name, eq, path = text.partition("=")
    if not eq:
        return text, text
    if not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH")
    return name, path


def add_lora_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("LoRA adapters")
    group.add_argument(
        "--lora-modules", nargs="+", type=lora_module, default=[], metavar="NAME=PATH",
        help="PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors) served beside the LLM: "
        "a request names one as its model ('NAME', or 'BASE:NAME'). vLLM's JSON form "
        '\'{"name": "sql", "path": "/adapters/sql"}\' works too',
    )  # fmt: skip
    group.add_argument(
        "--lora-paths", nargs="+", type=lora_module, default=[], metavar="NAME=PATH",
        help="SGLang's spelling of --lora-modules (also PATH alone, or its JSON form); /generate's lora_path "
        "names one",
    )  # fmt: skip
    group.add_argument(
        "--max-loras", type=positive_int, default=4, metavar="N",
        help="adapters one batch may mix (device slots); requests for more wait for a slot",
    )  # fmt: skip
    group.add_argument(
        "--max-lora-rank", type=positive_int, default=16, metavar="R",
        help="the largest adapter rank accepted (slots are padded to it)",
    )  # fmt: skip
    group.add_argument(
        "--max-cpu-loras", type=positive_int, default=None, metavar="N",
        help="adapters whose weights stay in CPU memory (the least recently used is read again from disk "
        "when needed); default: --max-loras",
    )  # fmt: skip
    group.add_argument(
        "--enable-lora-runtime-updates", action="store_true",
        help="allow loading and unloading adapters while serving: POST /v1/load_lora_adapter and "
        "/v1/unload_lora_adapter (vLLM), /load_lora_adapter and /unload_lora_adapter (SGLang)",
    )  # fmt: skip


def lora_engine_config(args: argparse.Namespace) -> dict[str, Any]:
    """EngineConfig's LoRA fields from the flags."""
    modules: dict[str, str] = {}
    for name, path in [*args.lora_modules, *args.lora_paths]:
        if name in modules:
            raise SystemExit(f"rtserve: the LoRA adapter name {name!r} is given twice")
        modules[name] = path
    return {
        "lora_modules": modules,
        "max_loras": args.max_loras,
        "max_lora_rank": args.max_lora_rank,
        "max_cpu_loras": args.max_cpu_loras,
    }
