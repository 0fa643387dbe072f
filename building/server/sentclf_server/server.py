"""Process lifecycle: bind gRPC + metrics, load and warm up the model, serve, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tritonclient.grpc import service_pb2_grpc

from .batcher import DynamicBatcher
from .config import Settings
from .metrics import observe_batch, start_metrics_server
from .service import SERVICE_NAME, InferenceServicer, ServerState

if TYPE_CHECKING:
    from .model import SentenceClassifier

log = logging.getLogger("sentclf_server")

_HEALTH_SERVICES = ("", SERVICE_NAME)


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel options: bounded receive size (oversized -> RESOURCE_EXHAUSTED), no silent port sharing."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # gRPC enables SO_REUSEPORT by default, which would let a second server bind the same port
        # silently and steal half the traffic; fail loudly instead.
        ("grpc.so_reuseport", 0),
    ]


def load_model(settings: Settings) -> SentenceClassifier:
    """Load tokenizer + ORT session and run one warm-up inference (blocking; runs in the ORT thread)."""
    from .model import (
        SentenceClassifier,  # imported here so config errors surface before ORT loads
    )

    model = SentenceClassifier(settings)
    model.warm_up()
    return model


async def _set_health(health: health_aio.HealthServicer, status: int) -> None:
    for service in _HEALTH_SERVICES:
        await health.set(service, status)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _load(
    settings: Settings, executor: ThreadPoolExecutor, stop: asyncio.Event
) -> SentenceClassifier | None:
    """Load the model in the ORT thread; None if a stop signal came first."""
    loop = asyncio.get_running_loop()
    load = loop.run_in_executor(executor, load_model, settings)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({load, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if stop.is_set():
        return None
    return load.result()  # re-raises a loading error


async def serve(settings: Settings) -> None:
    """Run the server until SIGTERM/SIGINT, then drain in-flight requests within the grace period."""
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    # One thread for tokenize + ORT: ORT parallelises a batch over the cores itself (see batcher.py).
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort")
    state = ServerState(settings)
    health = health_aio.HealthServicer()
    await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)  # until warmed up

    server = grpc.aio.server(options=grpc_options(settings))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(f"{settings.bind_address}:{settings.grpc_port}")
    await server.start()
    try:
        start_metrics_server(settings.bind_address, settings.metrics_port)
    except OSError:
        await server.stop(0)
        raise
    log.info(
        "starting sentclf-server: model=%s version=%s grpc=%s:%d metrics=%s:%d model_dir=%s",
        settings.model_name,
        settings.model_version,
        settings.bind_address,
        port,
        settings.bind_address,
        settings.metrics_port,
        settings.model_dir,
    )
    try:
        started = time.perf_counter()
        model = await _load(settings, executor, stop)
        if model is not None:
            state.batcher = DynamicBatcher(
                model.predict, executor, settings.max_batch_size, settings.max_batch_delay_s, observe_batch
            )
            state.batcher.start()
            await _set_health(health, health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "model %s version %s loaded and warmed up in %.2fs; SERVING on port %d",
                settings.model_name,
                settings.model_version,
                time.perf_counter() - started,
                port,
            )
            await stop.wait()
        await _drain(state, health, server, settings)
    finally:
        await server.stop(0)
        executor.shutdown(wait=False, cancel_futures=True)


async def _drain(
    state: ServerState, health: health_aio.HealthServicer, server: grpc.aio.Server, settings: Settings
) -> None:
    grace = settings.grace_period_s
    log.info("stop signal received: NOT_SERVING, draining in-flight requests (grace %.1fs)", grace)
    state.draining = True
    await health.enter_graceful_shutdown()
    if settings.drain_delay_s > 0:
        # Optional: keep answering (health says NOT_SERVING) while load balancers notice, so clients
        # still routed here are not refused.
        await asyncio.sleep(settings.drain_delay_s)
    # Rejects new RPCs at once; in-flight ones (and the batcher feeding them) get `grace` seconds.
    await server.stop(grace)
    if state.batcher is not None:
        await state.batcher.stop()
    log.info("drained; exiting")
