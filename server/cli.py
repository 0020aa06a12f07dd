"""`rtserve`: run the server (`rtserve serve`) or the realtime microphone client (`rtserve realtime`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from engine.config import EngineConfig, default_cache_dir
from http_api.limits import HTTPLimits, MiB
from realtime.limits import RealtimeLimits
from server.cli_chat import add_chat_args
from server.cli_llm import add_llm_serving_args
from server.cli_lora import add_lora_args, lora_engine_config
from server.cli_media import add_media_args, media_limits
from server.cli_ray import add_ray_args, remote_engine
from server.cli_tts import add_tts_args, tts_voices
from server.cli_types import positive_float, positive_int
from server.origins import parse_origins
from server.settings import ServerSettings

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_ASR = "whisper-tiny.en"
DEFAULT_EMBED = "all-minilm-l6-v2"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each flag's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def origin_list(text: str) -> tuple[str, ...]:
    try:
        return parse_origins(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_network_args(p: argparse.ArgumentParser, settings: ServerSettings) -> None:
    """Where and how clients reach the server: address, key, origins, shutdown."""
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    net.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    net.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on API routes (env RTSERVE_API_KEY); "
        "/, /static/, /health and /metrics stay open",
    )
    net.add_argument(
        "--allowed-origins", type=origin_list, default=None, metavar="ORIGIN[,ORIGIN]",
        help="web origins (scheme://host[:port], or '*' for any) whose pages may call the API (CORS) and open "
        "/v1/realtime; default: only the server's own page. Clients that send no Origin (not a browser page) "
        "are always allowed; a page from any other origin gets a 403",
    )  # fmt: skip
    net.add_argument(
        "--shutdown-timeout", type=positive_float, default=settings.shutdown_timeout,
        help="on SIGTERM or Ctrl-C: seconds accepted requests get to finish before they end with an error",
    )  # fmt: skip


def add_limit_args(p: argparse.ArgumentParser, limits: HTTPLimits) -> None:
    group = p.add_argument_group("request limits (HTTP API)")
    group.add_argument(
        "--max-audio-mb", type=positive_float, default=limits.max_audio_bytes / MiB,
        help="largest audio upload accepted by /v1/audio/*, in MiB",
    )  # fmt: skip
    group.add_argument(
        "--max-audio-seconds", type=positive_float, default=limits.max_audio_seconds,
        help="longest audio accepted by /v1/audio/*, decoded; decoding stops past it (a 400)",
    )  # fmt: skip
    group.add_argument(
        "--max-sequences-per-request", type=positive_int, default=limits.max_sequences_per_request,
        help="most sequences one LLM request may ask for: prompts x n",
    )  # fmt: skip
    group.add_argument(
        "--max-tokens-per-request", type=positive_int, default=limits.max_tokens_per_request,
        help="most tokens one LLM request may ask for: every sequence's prompt plus its max_tokens",
    )  # fmt: skip
    group.add_argument(
        "--trust-request-chat-template", action="store_true",
        help="render a chat_template sent with a request (refused by default: a template is code); it "
        "renders off the event loop within a time bound",
    )  # fmt: skip


def add_model_args(p: argparse.ArgumentParser, defaults: EngineConfig) -> None:
    models = p.add_argument_group("models")
    models.add_argument("--llm", default=DEFAULT_LLM, help="LLM to serve, or 'none' to serve no LLM")
    models.add_argument(
        "--asr", action="append", metavar="MODEL[,MODEL]",
        help=f"Whisper model(s) to serve; repeat the flag or give a comma list, 'none' for no ASR "
        f"(default: {DEFAULT_ASR}; also available: whisper-base)",
    )  # fmt: skip
    models.add_argument(
        "--embed", action="append", metavar="MODEL",
        help=f"pooling model to serve (/v1/embeddings, /score, /rerank, /classify, /pooling): an embedded "
        f"name, the LLM's name (an embedder by last-token pooling), a sentence-transformers or Hugging Face "
        f"directory, or a hub id; repeat the flag for more, 'none' for none (default: {DEFAULT_EMBED})",
    )  # fmt: skip
    models.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=defaults.device, help="where to run"
    )
    models.add_argument(
        "--quantize",
        choices=["auto", "none", "q4", "int8", "int4", "int8w"],
        default=defaults.quantize,
        help="LLM weights (CPU): q4: decode steps through native CPU kernels reading 4-bit groups of 32 "
        "(and an 8-bit lm_head), fp32 activations, prefill fp32; auto (default): q4 where that changes no "
        "weight (a model shipped as GGUF Q4_1, like the default SmolLM2), else none; none: fp32 torch ops; "
        "int4 / int8w: torch's packed int4 / int8 weight-only kernels with bf16 activations; int8: dynamic "
        "int8 projections. Costs: see the README",
    )
    models.add_argument(
        "--num-scheduler-steps",
        type=positive_int,
        default=defaults.num_scheduler_steps,
        metavar="N",
        help="LLM decode steps run per scheduler round trip while no new request waits (1: one at a time)",
    )
    models.add_argument(
        "--asr-quantize",
        choices=["none", "int8"],
        default=defaults.asr_quantize,
        help="int8: dynamic int8 Whisper encoder MLP and vocabulary projection (CPU; faster, see the README)",
    )
    models.add_argument(
        "--cache-dir", type=Path, default=default_cache_dir(), help="converted weights live here"
    )
    models.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads (default: all cores)"
    )


def add_engine_args(p: argparse.ArgumentParser, defaults: EngineConfig) -> None:
    engine = p.add_argument_group("engine")
    engine.add_argument("--max-num-seqs", type=positive_int, default=defaults.max_num_seqs,
                        help="most LLM sequences in one running batch")  # fmt: skip
    engine.add_argument("--max-model-len", type=positive_int, default=defaults.max_model_len,
                        help="prompt + completion tokens per sequence (capped by the model)")  # fmt: skip
    engine.add_argument("--kv-cache-tokens", type=positive_int, default=defaults.kv_cache_tokens,
                        help="LLM KV cache capacity, in tokens across all sequences")  # fmt: skip
    engine.add_argument("--max-asr-batch", type=positive_int, default=defaults.max_asr_batch,
                        help="most Whisper windows in flight at once, batched together across all requests and "
                             "sessions (1 turns cross-request batching off)")  # fmt: skip
    engine.add_argument("--max-asr-encode", type=positive_int, default=defaults.max_asr_encode,
                        help="most Whisper windows started (encoded) in one engine step; default: 1 on a "
                             "CPU, where an encoder batch costs the sum of its windows, else --max-asr-batch")  # fmt: skip


def add_realtime_args(p: argparse.ArgumentParser, limits: RealtimeLimits) -> None:
    realtime = p.add_argument_group("realtime sessions (/v1/realtime)")
    realtime.add_argument("--max-sessions", type=positive_int, default=limits.max_sessions,
                          help="concurrent WebSocket sessions; more are refused")  # fmt: skip
    realtime.add_argument("--max-session-seconds", type=positive_float, default=limits.max_session_seconds,
                          help="a session is closed after this long")  # fmt: skip
    realtime.add_argument("--session-idle-timeout", type=positive_float, default=limits.session_idle_timeout,
                          help="a session is closed after this many seconds without a client message")  # fmt: skip
    realtime.add_argument("--max-buffered-audio-seconds", type=positive_float,
                          default=limits.max_buffered_audio_seconds,
                          help="uncommitted input audio kept per session")  # fmt: skip


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    settings = ServerSettings()
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP + realtime WebSocket server",
        description="Serve the OpenAI-compatible HTTP API, /generate, and the /v1/realtime WebSocket.",
        formatter_class=HelpFormatter,
    )
    add_network_args(p, settings)
    add_limit_args(p, settings.http)
    add_model_args(p, EngineConfig())
    add_engine_args(p, EngineConfig())
    add_realtime_args(p, settings.realtime)
    add_llm_serving_args(p, settings.http)
    add_chat_args(p)
    add_media_args(p, settings.http.media)
    add_lora_args(p)
    add_tts_args(p)
    add_ray_args(p)
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )


def asr_models(values: list[str] | None) -> list[str]:
    names = [name.strip() for value in (values or [DEFAULT_ASR]) for name in value.split(",") if name.strip()]
    return [] if names == ["none"] else names


def embed_models(values: list[str] | None) -> list[str]:
    names = [value.strip() for value in (values or [DEFAULT_EMBED]) if value.strip()]
    return [] if [n.lower() for n in names] == ["none"] else names


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        llm=None if args.llm.lower() == "none" else args.llm,
        served_model_names=list(args.served_model_name or []),
        generation_config=args.generation_config,
        chat_template=args.chat_template,
        override_generation_config=args.override_generation_config or {},
        asr=asr_models(args.asr),
        embed=embed_models(args.embed),
        tts=tts_voices(args.tts),
        device=args.device,
        quantize=args.quantize,
        num_scheduler_steps=args.num_scheduler_steps,
        asr_quantize=args.asr_quantize,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        kv_cache_tokens=args.kv_cache_tokens,
        max_asr_batch=args.max_asr_batch,
        max_asr_encode=args.max_asr_encode,
        cache_dir=args.cache_dir,
        threads=args.threads,
        **lora_engine_config(args),
        mm_embedding_cache_mib=args.mm_embedding_cache_mib,
        max_prefill_media=args.max_prefill_media,
    )


def server_settings(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        api_key=args.api_key or os.environ.get("RTSERVE_API_KEY") or None,
        allowed_origins=args.allowed_origins or (),
        shutdown_timeout=args.shutdown_timeout,
        http=HTTPLimits(
            max_audio_bytes=int(args.max_audio_mb * MiB),
            max_audio_seconds=args.max_audio_seconds,
            max_sequences_per_request=args.max_sequences_per_request,
            max_tokens_per_request=args.max_tokens_per_request,
            trust_request_chat_template=args.trust_request_chat_template,
            tool_call_parser=args.tool_call_parser,
            enable_auto_tool_choice=args.enable_auto_tool_choice,
            reasoning_parser=args.reasoning_parser,
            responses_store_size=args.responses_store_size,
            responses_store_ttl=args.responses_store_ttl,
            enable_lora_runtime_updates=args.enable_lora_runtime_updates,
            media=media_limits(args),
        ),
        realtime=RealtimeLimits(
            max_sessions=args.max_sessions,
            max_session_seconds=args.max_session_seconds,
            session_idle_timeout=args.session_idle_timeout,
            max_buffered_audio_seconds=args.max_buffered_audio_seconds,
        ),
    )


def serve(args: argparse.Namespace) -> None:
    from server.app import create_app
    from server.runner import run

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = engine_config(args)
    if config.llm is None and not config.asr and not config.embed and not config.tts:
        raise SystemExit("rtserve: nothing to serve (--llm none, --asr none, --embed none and --tts none)")
    app = create_app(config, settings=server_settings(args), engine=remote_engine(args, config))
    access_log = logging.getLogger("aiohttp.access") if args.log_level == "debug" else None
    run(app, args.host, args.port, access_log)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "realtime":
        from clients.realtime_client import main as realtime_main

        realtime_main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="rtserve", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{serve,realtime}")
    add_serve_parser(subparsers)
    subparsers.add_parser(
        "realtime", help="stream a microphone or audio file to a running server (see `rtserve realtime --help`)",
        add_help=False,
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)


if __name__ == "__main__":
    main()
