"""`rtserve serve --ray`: the engine as replicas on Ray Serve (engine/remote/) behind this front end.

Ray is imported only when --ray is given (it is an optional extra: pip install 'rtserve[ray]').
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.config import EngineConfig
from server.cli_types import positive_float, positive_int

if TYPE_CHECKING:
    from engine.remote.client import RemoteEngine


def replica_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    try:
        bounds = int(low), int(high)
    except ValueError:
        bounds = (0, 0)
    if not sep or not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX with 1 <= MIN <= MAX, got {text!r}")
    return bounds


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_ray_args(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group(
        "Ray Serve (engine replicas)",
        "Every model and engine flag above applies to each replica. The front end joins the app if it "
        "already runs with the same flags, so front ends can restart (or be added) without touching replicas.",
    )
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run the engine as Ray Serve replicas: join the cluster at ADDRESS (HOST:PORT of a "
                          "`ray start --head`; 'auto': the one `ray start` runs on this machine), or without "
                          "ADDRESS start one in this process (it ends with the server)")  # fmt: skip
    ray.add_argument(
        "--replicas", metavar="N", type=positive_int, default=1, help="engine replicas (with --ray)"
    )
    ray.add_argument("--autoscale", type=replica_range, default=None, metavar="MIN:MAX",
                     help="autoscale between MIN and MAX replicas instead of --replicas")  # fmt: skip
    ray.add_argument("--target-ongoing-requests", metavar="N", type=positive_float, default=16.0,
                     help="--autoscale: ongoing requests per replica that autoscaling aims for")  # fmt: skip
    ray.add_argument(
        "--replica-cpus", metavar="N", type=positive_float, default=1.0, help="CPUs each replica reserves"
    )
    ray.add_argument("--replica-gpus", metavar="N", type=non_negative_float, default=None,
                     help="GPUs each replica reserves (1: a replica per GPU); default 1 with --device cuda, "
                          "else 0")  # fmt: skip
    ray.add_argument("--max-ongoing-requests", metavar="N", type=positive_int, default=64,
                     help="requests a replica runs at once; more wait in the front end's queue")  # fmt: skip
    ray.add_argument("--max-queued-requests", metavar="N", type=positive_int, default=128,
                     help="requests that may wait for a replica (per front end); more get a 503")  # fmt: skip
    ray.add_argument("--ray-app", default="rtserve", metavar="NAME",
                     help="the Ray Serve application name (one per configuration)")  # fmt: skip


def remote_engine(args: argparse.Namespace, config: EngineConfig) -> RemoteEngine | None:
    """The Ray Serve engine when --ray was given, else None (the in-process engine)."""
    if args.ray is None:
        return None
    try:
        from engine.remote.client import RemoteEngine
        from engine.remote.cluster import RayOptions
    except ImportError as exc:
        raise SystemExit(f"rtserve: --ray needs Ray Serve: pip install 'rtserve[ray]' ({exc})") from None
    gpus = args.replica_gpus if args.replica_gpus is not None else (1.0 if args.device == "cuda" else 0.0)
    options = RayOptions(
        address=args.ray or None,
        app_name=args.ray_app,
        replicas=args.replicas,
        autoscale=args.autoscale,
        target_ongoing_requests=args.target_ongoing_requests,
        num_cpus=args.replica_cpus,
        num_gpus=gpus,
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
    )
    return RemoteEngine(config, options)
