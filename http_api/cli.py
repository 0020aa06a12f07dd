"""`rtserve`: run the server (`rtserve serve`) or the realtime microphone client (`rtserve realtime`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from engine.config import EngineConfig, default_cache_dir
from http_api.app_keys import MiB, ServerSettings

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_ASR = "whisper-tiny.en"
SHUTDOWN_TIMEOUT_S = 10.0  # how long in-flight requests get to finish on Ctrl-C / SIGTERM


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each flag's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = EngineConfig()
    limits = ServerSettings()
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP + realtime WebSocket server",
        description="Serve the OpenAI-compatible HTTP API, /generate, and the /v1/realtime WebSocket.",
        formatter_class=HelpFormatter,
    )
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    net.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    net.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on API routes (env RTSERVE_API_KEY); "
        "/, /static/, /health and /metrics stay open",
    )
    net.add_argument(
        "--max-audio-mb", type=positive_float, default=limits.max_audio_bytes / MiB,
        help="largest audio upload accepted by /v1/audio/*, in MiB",
    )  # fmt: skip

    models = p.add_argument_group("models")
    models.add_argument("--llm", default=DEFAULT_LLM, help="LLM to serve, or 'none' to serve no LLM")
    models.add_argument(
        "--asr", action="append", metavar="MODEL[,MODEL]",
        help=f"Whisper model(s) to serve; repeat the flag or give a comma list, 'none' for no ASR "
        f"(default: {DEFAULT_ASR}; also available: whisper-base)",
    )  # fmt: skip
    models.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=defaults.device, help="where to run"
    )
    models.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default=defaults.quantize,
        help="int8: dynamic int8 LLM projections (CPU; about 1.2x decode throughput for +23%% perplexity)",
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

    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )


def asr_models(values: list[str] | None) -> list[str]:
    names = [name.strip() for value in (values or [DEFAULT_ASR]) for name in value.split(",") if name.strip()]
    return [] if names == ["none"] else names


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        llm=None if args.llm.lower() == "none" else args.llm,
        asr=asr_models(args.asr),
        device=args.device,
        quantize=args.quantize,
        asr_quantize=args.asr_quantize,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        kv_cache_tokens=args.kv_cache_tokens,
        max_asr_batch=args.max_asr_batch,
        max_asr_encode=args.max_asr_encode,
        cache_dir=args.cache_dir,
        threads=args.threads,
    )


def server_settings(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        api_key=args.api_key or os.environ.get("RTSERVE_API_KEY") or None,
        max_audio_bytes=int(args.max_audio_mb * MiB),
        max_sessions=args.max_sessions,
        max_session_seconds=args.max_session_seconds,
        session_idle_timeout=args.session_idle_timeout,
        max_buffered_audio_seconds=args.max_buffered_audio_seconds,
    )


def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from http_api.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = engine_config(args)
    if config.llm is None and not config.asr:
        raise SystemExit("rtserve: nothing to serve (--llm none and --asr none)")
    app = create_app(config, settings=server_settings(args))
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        handler_cancellation=True,  # a client that disconnects cancels its handler, which aborts its request
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=logging.getLogger("aiohttp.access") if args.log_level == "debug" else None,
        print=lambda msg: logging.getLogger("rtserve").info(msg.strip()),
    )


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
