"""Joining (or starting) the Ray cluster, deploying the engine replicas, and reading their state.

Blocking calls: the RemoteEngine runs them off the event loop. A front end that joins a cluster where the
app already runs with the same config and options just takes a handle, so restarting (or adding) front
ends never restarts replicas; a different config redeploys the app (Serve replaces replicas in turn).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_list
from ray.serve.handle import DeploymentHandle

from engine.config import EngineConfig
from engine.remote.replica import EngineReplica, stats_key_prefix
from engine.stats import EngineStats

log = logging.getLogger("rtserve.ray")
DEPLOYMENT = "EngineReplica"
STATS_MAX_AGE_S = 5.0  # a replica's published stats older than this: it is gone
STATS_FORGET_S = 60.0  # ... and older than this are deleted from the store
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2  # a head this process starts: requests and replies are small


@dataclass(frozen=True)
class RayOptions:
    # None: start a head in this process. HOST:PORT (or "auto": the one on this machine): join it.
    address: str | None = None
    app_name: str = "rtserve"
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; replaces `replicas`
    target_ongoing_requests: float = 16.0  # autoscaling: ongoing requests per replica it aims for
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica (1: one replica per GPU)
    max_ongoing_requests: int = 64  # per replica; more wait in the front end's queue...
    max_queued_requests: int = 128  # ... up to this many per front end, then BackPressureError (503)

    @property
    def replicas_wanted(self) -> int:
        """Fewer replicas than this running: /health says degraded."""
        return self.autoscale[0] if self.autoscale else self.replicas

    def deployment_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "name": DEPLOYMENT,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.autoscale:
            low, high = self.autoscale
            options["autoscaling_config"] = {
                "min_replicas": low,
                "initial_replicas": low,
                "max_replicas": high,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.replicas
        return options


def fingerprint(config: EngineConfig, options: RayOptions) -> str:
    """What a deployment was made from: a front end with another config or options redeploys."""
    deployed = (repr(config), repr(sorted(options.deployment_options().items())))
    return hashlib.sha256(repr(deployed).encode()).hexdigest()[:16]


def connect(options: RayOptions) -> bool:
    """ray.init: join `address` ("auto": the cluster `ray start` runs on this machine), or without one
    start a head in this process (True: it ends with this process). Then make sure Serve runs, without
    its HTTP proxy: the aiohttp front end is the only door."""
    started_head = False
    if not ray.is_initialized():
        if options.address is not None:
            ray.init(address=options.address)
        else:  # "local": never a cluster found in the environment (or a stale one in /tmp/ray)
            ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            started_head = True
    serve.start(proxy_location="Disabled")
    return started_head


def deploy(config: EngineConfig, options: RayOptions) -> DeploymentHandle:
    """A handle to the app's replicas; deploys (or redeploys) them unless they already run this config.
    Returns once the replicas are up (their models loaded)."""
    wanted = fingerprint(config, options)
    running = running_fingerprint(options)
    if running == wanted:
        log.info("joining the running Ray Serve app %r", options.app_name)
        return serve.get_deployment_handle(DEPLOYMENT, options.app_name)
    if running is not None:
        log.info(
            "the running app %r was deployed from other flags (%s, not %s)", options.app_name, running, wanted
        )
    log.info("deploying %r: %s", options.app_name, options.deployment_options())
    deployment = serve.deployment(EngineReplica).options(**options.deployment_options())
    app = deployment.bind(config, options.app_name, wanted)
    return serve.run(app, name=options.app_name, route_prefix=None)


def running_fingerprint(options: RayOptions) -> str | None:
    app = serve.status().applications.get(options.app_name)
    if app is None or app.status != "RUNNING":
        return None
    handle = serve.get_deployment_handle(DEPLOYMENT, options.app_name)
    return handle.info.remote().result(timeout_s=60).fingerprint


def running_replicas(options: RayOptions) -> int:
    app = serve.status().applications.get(options.app_name)
    deployment = app.deployments.get(DEPLOYMENT) if app else None
    return deployment.replica_states.get("RUNNING", 0) if deployment else 0


def replica_stats(options: RayOptions) -> dict[str, EngineStats]:
    """Every live replica's last published EngineStats, by replica id."""
    now = time.time()
    found: dict[str, EngineStats] = {}
    prefix = stats_key_prefix(options.app_name)
    for key in _internal_kv_list(prefix):
        blob = _internal_kv_get(key)
        if blob is None:
            continue
        published, stats = pickle.loads(blob)
        if now - published > STATS_FORGET_S:
            _internal_kv_del(key)
        elif now - published <= STATS_MAX_AGE_S:
            found[key[len(prefix) :].decode()] = stats
    return found


def disconnect(started_head: bool) -> None:
    """The front end leaves; a cluster it joined keeps its replicas, a head it started goes with it."""
    if started_head:
        serve.shutdown()
    ray.shutdown()
