"""Process lifecycle: bind gRPC + metrics, load and warm up the model, serve, drain on SIGTERM/SIGINT.

The gRPC server is grpcio's synchronous one: each RPC runs in a thread of a pool of RPC_THREADS, and a
ModelInfer thread waits in the batcher, or runs the batch itself (see batcher.py). Measured against the
asyncio server with the model in an executor thread, this saves the two thread hops per request and about
a quarter of the gRPC CPU per RPC.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc

from .batcher import DynamicBatcher
from .capture import Capture, CaptureSettings
from .config import Settings
from .dataplane import DataPlane, ServedVersion
from .feedback import feedback_from_env
from .grpc_guard import GuardInterceptor, core_receive_limit
from .http_server import HttpServers
from .metrics import SHADOW_DURATION, observe_model, shadow_counters
from .service import SERVICE_NAME, InferenceServicer
from .shadow import ShadowScorer
from .versions import ROUTE_SHADOW, Versions

if TYPE_CHECKING:
    from .model import SentenceClassifier

log = logging.getLogger("sentclf_server")

_HEALTH_SERVICES = ("", SERVICE_NAME)


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel options: bounded receive size, no silent port sharing. A message over MAX_MESSAGE_BYTES is
    refused (and counted) by grpc_guard; the core's own limit is only a ceiling above that."""
    return [
        ("grpc.max_receive_message_length", core_receive_limit(settings.max_message_bytes)),
        # gRPC enables SO_REUSEPORT by default, which would let a second server bind the same port
        # silently and steal half the traffic; fail loudly instead.
        ("grpc.so_reuseport", 0),
    ]


def shadow_settings(settings: Settings) -> Settings:
    """A shadow challenger's settings: its ORT session computes in the calling thread only, so all of its
    work runs in the shadow thread at the lowest priority (shadow.py)."""
    return dataclasses.replace(settings, ort_intra_op_threads=1)


def load_model(settings: Settings) -> SentenceClassifier:
    """Load tokenizer + ORT session and warm it up (blocking)."""
    from .model import SentenceClassifier  # imported here so config errors surface before ORT loads

    model = SentenceClassifier(settings, observer=observe_model)
    model.warm_up()
    return model


def start_capture(settings: Settings, state: DataPlane) -> Capture | None:
    """The traffic capture of CAPTURE_DIR, or None when it is unset (nothing is captured)."""
    if settings.capture_dir is None:
        return None
    capture = Capture(
        CaptureSettings(
            settings.capture_dir,
            settings.capture_sample,
            int(settings.capture_max_mb * 1024 * 1024),
            settings.capture_text,
        ),
        settings.model_name,
        settings.model_version,
        settings.labels,
        settings.tokenizer_path,
        state.limits.max_chars,
        state.metrics.capture_counters(),
    )
    log.info(
        "capture on: %s of requests to %s (at most %s MB, text %s)",
        settings.capture_sample,
        settings.capture_dir,
        settings.capture_max_mb,
        "stored" if settings.capture_text else "hashed",
    )
    return capture


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: each idle HTTP connection holds a descriptor,
    and a soft limit of 1024 (a shell's default) would refuse new callers while a thousand sit idle."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard)
            )


def _set_health(servicer: health.HealthServicer, status: int) -> None:
    for service in _HEALTH_SERVICES:
        servicer.set(service, status)


def _install_signal_handlers(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())


def _load(versions: list[Settings], stop: threading.Event) -> list[SentenceClassifier] | None:
    """Load each version's model in a background thread; None if a stop signal came first."""
    outcome: dict[str, object] = {}
    loaded = threading.Event()

    def target() -> None:
        try:
            outcome["models"] = [load_model(settings) for settings in versions]
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc
        finally:
            loaded.set()

    threading.Thread(target=target, name="load-model", daemon=True).start()
    while not loaded.wait(0.05):
        if stop.is_set():
            return None
    if "error" in outcome:
        raise outcome["error"]
    return outcome["models"]


def _batcher(model: SentenceClassifier, settings: Settings, version: ServedVersion) -> DynamicBatcher:
    return DynamicBatcher(
        model.predict,
        settings.max_batch_size,
        settings.max_batch_delay_s,
        settings.max_concurrent_batches,
        version.metrics.observe_batch,
    )


def _start_versions(state: DataPlane, models: list[SentenceClassifier]) -> None:
    """Batchers for the loaded versions, the shadow scorer (ROUTE=shadow), capture and feedback."""
    settings = state.settings
    state.champion.batcher = _batcher(models[0], settings, state.champion)
    state.batcher = state.champion.batcher
    if state.challenger is not None:
        state.challenger.batcher = _batcher(models[1], settings, state.challenger)
        if state.route.mode == ROUTE_SHADOW:
            challenger = state.challenger
            state.shadow = ShadowScorer(
                models[1].predict,
                state.shadow_scored,
                shadow_counters(settings.model_name, challenger.version),
                settings.max_batch_size,
                observe_seconds=SHADOW_DURATION.labels(settings.model_name, challenger.version).observe,
                busy=state.busy,
            )
    state.capture = start_capture(settings, state)
    state.feedback = feedback_from_env(os.environ, settings.model_name)


def serve(settings: Settings, versions: Versions | None = None) -> None:
    """Run the server until SIGTERM/SIGINT, then drain in-flight requests within the grace period."""
    stop = threading.Event()
    _install_signal_handlers(stop)
    state = DataPlane(settings, versions=versions)
    health_servicer = health.HealthServicer()
    _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)  # until warmed up

    pool = ThreadPoolExecutor(max_workers=settings.rpc_threads, thread_name_prefix="rpc")
    server = grpc.server(pool, options=grpc_options(settings), interceptors=[GuardInterceptor(state)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{settings.bind_address}:{settings.grpc_port}")
    raise_open_files_limit()
    http = HttpServers(state, settings.bind_address, settings.http_port, settings.metrics_port)
    http.bind(bool(settings.http_port))
    server.start()
    try:
        http.start()
        log.info(
            "starting sentclf-server: model=%s version=%s grpc=%s:%d http=%s metrics=%s:%d model_dir=%s",
            settings.model_name,
            settings.model_version,
            settings.bind_address,
            port,
            f"{settings.bind_address}:{http.port}" if http.port else "off",
            settings.bind_address,
            http.metrics_port,
            settings.model_dir,
        )
        started = time.perf_counter()
        loading = [settings]
        if state.challenger is not None:
            challenger = state.challenger.settings
            loading.append(shadow_settings(challenger) if state.route.mode == ROUTE_SHADOW else challenger)
        models = _load(loading, stop)
        if models is not None:
            _start_versions(state, models)
            _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "model %s version(s) %s loaded and warmed up in %.2fs (route %s); SERVING on port %d",
                settings.model_name,
                ", ".join(v.version for v in state.served),
                time.perf_counter() - started,
                state.route.mode if state.route.mode != "split" else f"split:{state.route.percent:g}",
                port,
            )
            stop.wait()
        _drain(state, health_servicer, server, http, settings)
    finally:
        server.stop(0)
        pool.shutdown(wait=False, cancel_futures=True)


def _drain(
    state: DataPlane,
    servicer: health.HealthServicer,
    server: grpc.Server,
    http: HttpServers,
    settings: Settings,
) -> None:
    grace = settings.grace_period_s
    # Health first, the log line after: a write to a log under I/O pressure must not delay NOT_SERVING.
    state.draining = True
    servicer.enter_graceful_shutdown()
    log.info("stop signal received: NOT_SERVING, draining in-flight requests (grace %.1fs)", grace)
    if settings.drain_delay_s > 0:
        # Optional: keep answering (health says NOT_SERVING) while load balancers notice, so clients
        # still routed here are not refused.
        time.sleep(settings.drain_delay_s)
    # Rejects new RPCs and HTTP requests at once; in-flight ones (and their batches) get `grace` seconds.
    stopped = server.stop(grace)
    http.stop(grace)
    stopped.wait()
    for version in state.served:
        if version.batcher is not None:
            version.batcher.stop()
    if state.shadow is not None:
        state.shadow.close()
    if state.capture is not None:
        state.capture.close()
    if state.feedback is not None:
        state.feedback.close()
    log.info("drained; exiting")
