"""The Open Inference Protocol over HTTP/JSON, on uvicorn + Starlette: a thin shell over the data plane.

Why a maintained ASGI stack (KServe's and MLServer's): the HTTP parsing, limits and connection handling are
uvicorn's and h11's, tested by many more callers than ours. An event loop holds any number of idle or slow
connections (a client sending its headers a byte a second costs a socket, not a thread), so no connection
cap is needed and none locks a new caller out. The request line and headers are bounded by h11 (16 KB: 400),
a body by MAX_MESSAGE_BYTES (413) and the JSON's depth by the parser (400); every error is the protocol's
`{"error": ...}`, a wrong method 405 (with `Allow`), HEAD works where GET does, and no response names a
runtime version (no `Server` header at all).

The event loop only receives the body; parsing, the batcher (dataplane.py: the same dynamic batcher the gRPC
handler threads use) and encoding the answer run in a worker thread (at most RPC_THREADS at once), so a
3 MB body being parsed never holds up a short request on the loop.

Routes (`{model}` optionally followed by `/versions/{version}`):
  GET  /v2/health/live, /v2/health/ready    200, or 400 when not ready (empty bodies, as the protocol says)
  GET  /v2                                  server metadata
  GET  /v2/models/{model}                   model metadata
  GET  /v2/models/{model}/ready             200, or 400 when not ready (an unknown model is not ready)
  GET  /v2/models/{model}/config            Triton's model configuration (the class names)
  POST /v2/models/{model}/infer             inference
The metrics port is a second Starlette app on the same event loop: prometheus_client's exposition at
/metrics, 404 elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable

import anyio
import uvicorn
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .dataplane import HTTP_STATUS, DataPlane, InferenceError, RequestOutcome
from .feedback import FeedbackError, parse_feedback
from .http_codec import HEADER_LENGTH, BadRequest, encode_infer_response, error_body, parse_infer_request
from .metrics import count_request
from .outputs import config_parameters, encode_outputs, served_metadata, served_outputs, thresholds_of
from .pair_inputs import input_names
from .refusals import RateLimitFilter, log_refusal
from .versions import ROUTING_KEY_HEADER

log = logging.getLogger(__name__)

EXTENSIONS = ["model_configuration", "binary_tensor_data"]
# A refused body is read and thrown away up to this size (so a client that sends it before reading the
# answer, as urllib and tritonclient do, sees the 413, not a reset); beyond it the connection is closed.
_DRAIN_LIMIT = 64 * 1024 * 1024
_JSON = "application/json"
_CONFIG_TYPES = {"BYTES": "TYPE_STRING", "INT64": "TYPE_INT64", "FP32": "TYPE_FP32"}
# An idle keep-alive connection is closed after this many seconds (tritonclient keeps a pool open).
KEEP_ALIVE_S = 60
# Bounds on a request's head: h11 refuses (400, connection closed) a head still incomplete at
# MAX_HEAD_BYTES; HeadLimits refuses a complete one over MAX_PATH_BYTES (414) or MAX_HEAD_BYTES (431).
MAX_HEAD_BYTES = 16 * 1024
MAX_PATH_BYTES = 8 * 1024


def _json(status: int, value: object, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), status, headers, _JSON)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status, headers, _JSON)


def _status(ok: bool) -> Response:
    return Response(status_code=200 if ok else 400)


def _endpoint(path: str) -> str:
    """The metrics' name of a path's route (`unknown` for none)."""
    if path in ("/v2/health/live", "/v2/health/ready"):
        return "health_" + path.rsplit("/", 1)[-1]
    if path in ("/v2", "/v2/"):
        return "server_metadata"
    parts = path.split("/")
    if len(parts) >= 4 and parts[:3] == ["", "v2", "models"]:
        rest = parts[4:]
        if len(rest) >= 2 and rest[0] == "versions":
            rest = rest[2:]
        if not rest:
            return "model_metadata"
        if len(rest) == 1 and rest[0] in ("ready", "infer", "config", "feedback"):
            return f"model_{rest[0]}"
    return "unknown"


class InferenceApp:
    """The Starlette application of one data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.limiter: anyio.CapacityLimiter | None = None  # made on the event loop (see run)
        routes = [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/", self.server_metadata, methods=["GET"]),
        ]
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [
                Route(base, self.model_metadata, methods=["GET"]),
                Route(f"{base}/ready", self.model_ready, methods=["GET"]),
                Route(f"{base}/config", self.model_config, methods=["GET"]),
                Route(f"{base}/infer", self.infer, methods=["POST"]),
            ]
        routes.append(Route("/v2/models/{model}/feedback", self.feedback, methods=["POST"]))
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_error})

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        """Starlette's own refusals (404 no route, 405 method) as the protocol's error JSON."""
        endpoint = _endpoint(request.url.path)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; use {exc.headers['Allow']}"
        else:
            message = exc.detail
        count_request("http", endpoint, "UNIMPLEMENTED" if exc.status_code == 405 else "NOT_FOUND")
        return _error(exc.status_code, message, exc.headers)

    # -- the GET routes -------------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        count_request("http", "health_live", "OK")
        return _status(True)

    async def ready(self, request: Request) -> Response:
        count_request("http", "health_ready", "OK")
        return _status(self.plane.ready)

    async def server_metadata(self, request: Request) -> Response:
        count_request("http", "server_metadata", "OK")
        return _json(200, self.plane.server_metadata(EXTENSIONS))

    async def model_ready(self, request: Request) -> Response:
        count_request("http", "model_ready", "OK")
        params = request.path_params
        return _status(self.plane.model_ready(params["model"], params.get("version")))

    async def model_metadata(self, request: Request) -> Response:
        return self._described(request, "model_metadata", self.plane.model_metadata)

    async def model_config(self, request: Request) -> Response:
        return self._described(request, "model_config", lambda: _model_config(self.plane))

    def _described(self, request: Request, endpoint: str, describe: Callable[[], dict]) -> Response:
        params = request.path_params
        try:
            self.plane.check_model(params["model"], params.get("version"))
        except InferenceError as err:
            count_request("http", endpoint, err.code)
            return _error(HTTP_STATUS[err.code], err.message)
        count_request("http", endpoint, "OK")
        return _json(200, describe())

    # -- inference ------------------------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        plane = self.plane
        params = request.path_params
        length = _content_length(request)
        if length is None:
            plane.metrics.observe_refusal("http", "INVALID_ARGUMENT")
            count_request("http", "model_infer", "INVALID_ARGUMENT")
            message = "an infer request needs a Content-Length (chunked bodies are not accepted)"
            return _error(411, message, {"Connection": "close"})
        with plane.track("http") as outcome:
            response = await self._infer(request, params["model"], params.get("version"), length, outcome)
        count_request("http", "model_infer", outcome.code)
        return response

    async def _infer(
        self, request: Request, name: str, version: str | None, length: int, outcome: RequestOutcome
    ) -> Response:
        plane = self.plane
        try:
            plane.check_model(name, version)
            plane.check_size(length)
        except InferenceError as err:
            outcome.code, outcome.message = err.code, err.message
            return await self._refuse_unread(request, length, HTTP_STATUS[err.code], err.message)
        try:
            body = await request.body()
        except ClientDisconnect:
            outcome.code, outcome.message = "CANCELLED", "the caller went away before its body arrived"
            return Response(status_code=499)
        header_length = request.headers.get(HEADER_LENGTH)
        routing_key = request.headers.get(ROUTING_KEY_HEADER)
        try:
            status, payload, extra = await anyio.to_thread.run_sync(
                self._answer, body, header_length, version, routing_key, outcome, limiter=self.limiter
            )
        except InferenceError as err:
            outcome.code, outcome.message = err.code, err.message
            return _error(HTTP_STATUS[err.code], err.message)
        except Exception as exc:  # track() logs the line; the batcher logs a model failure's traceback
            outcome.code, outcome.message = "INTERNAL", repr(exc)
            return _error(500, "internal error during inference; see server log")
        return Response(payload, status, extra, _JSON)

    # -- feedback -------------------------------------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        """Labels of served requests, appended to FEEDBACK_DIR (feedback.py)."""
        plane = self.plane
        code, response = "OK", None
        length = _content_length(request)
        try:
            plane.check_model(request.path_params["model"], None)
            if plane.feedback is None:
                raise InferenceError("NOT_FOUND", "feedback is off: start the server with FEEDBACK_DIR set")
            if length is None:
                raise InferenceError("INVALID_ARGUMENT", "a feedback request needs a Content-Length")
            plane.check_size(length)
        except InferenceError as err:
            code = err.code
            status = 411 if length is None and err.code == "INVALID_ARGUMENT" else HTTP_STATUS[err.code]
            response = await self._refuse_unread(request, length or 0, status, err.message)
        if response is None:
            body = await request.body()
            try:
                accepted = await anyio.to_thread.run_sync(self._store_feedback, body, limiter=self.limiter)
                response = _json(200, {"accepted": accepted})
            except InferenceError as err:
                code, response = err.code, _error(HTTP_STATUS[err.code], err.message)
        count_request("http", "model_feedback", code)
        if code != "OK":
            log_refusal("http", "feedback", code, json.loads(response.body)["error"])
        return response

    def _store_feedback(self, body: bytes) -> int:
        plane = self.plane
        try:
            items = parse_feedback(json.loads(body), plane.settings.labels)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InferenceError("INVALID_ARGUMENT", f"malformed JSON in the feedback body: {exc}") from None
        except FeedbackError as exc:
            raise InferenceError("INVALID_ARGUMENT", str(exc)) from None
        try:
            plane.feedback.append(items)
        except OSError as exc:
            raise InferenceError(
                "UNAVAILABLE", f"cannot store feedback in FEEDBACK_DIR ({exc}); retry"
            ) from None
        plane.metrics.feedback.inc(len(items))
        return len(items)

    async def _refuse_unread(self, request: Request, length: int, status: int, message: str) -> Response:
        """Answer without using the body: thrown away up to _DRAIN_LIMIT, else the connection closed. A
        client that asked `Expect: 100-continue` (curl) never gets the 100, so it never sends the body."""
        if request.headers.get("expect", "").lower() == "100-continue" or length > _DRAIN_LIMIT:
            return _error(status, message, {"Connection": "close"})
        async for _ in request.stream():
            pass
        return _error(status, message)

    def _answer(
        self,
        body: bytes,
        header_length: str | None,
        version: str | None,
        routing_key: str | None,
        outcome: RequestOutcome,
    ) -> tuple[int, bytes, dict[str, str] | None]:
        """In a worker thread: parse, infer (in the chosen version's batcher), encode."""
        plane = self.plane
        try:
            request = parse_infer_request(
                body,
                int(header_length) if header_length is not None else None,
                plane.settings.pair_input,
                served_outputs(plane.settings.serving),
            )
        except (BadRequest, ValueError) as exc:
            raise InferenceError("INVALID_ARGUMENT", str(exc)) from None
        plane.check_count(len(request.texts))
        answer = plane.infer(
            request.texts,
            version=version,
            request_id=request.id,
            routing_key=request.routing_key or routing_key,
            outcome=outcome,
            text_pairs=request.text_pairs,
        )
        settings = plane.settings
        tensors = encode_outputs(
            answer.probs, settings.labels, request.outputs, thresholds_of(settings.serving)
        )
        payload, json_length = encode_infer_response(
            settings.model_name, answer.version, answer.id, tensors, request.binary
        )
        if json_length is None:
            return 200, payload, None
        return 200, payload, {HEADER_LENGTH: str(json_length)}


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        return None  # h11 has already refused a malformed one with 400
    return int(raw)


def _model_config(plane: DataPlane) -> dict:
    """Triton's model configuration as its HTTP endpoint spells it (see service.model_config)."""
    settings = plane.settings
    return {
        "name": settings.model_name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": 0,
        "input": [
            {"name": name, "data_type": "TYPE_STRING", "dims": [-1]}
            for name in input_names(settings.pair_input)
        ],
        "output": [
            {"name": name, "data_type": _CONFIG_TYPES[datatype], "dims": shape}
            for name, datatype, shape in served_metadata(settings.serving)
        ],
        "parameters": {
            key: {"string_value": value} for key, value in config_parameters(settings.serving).items()
        },
    }


async def _metrics(request: Request) -> Response:
    # prometheus_client's exposition, in the format the scraper accepts (text or OpenMetrics)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), headers={"Content-Type": content_type})


class HeadLimits:
    """ASGI middleware: a request line or headers over the bounds are refused (414 / 431) even when they
    arrived whole in one read, which h11's incomplete-event bound does not see."""

    def __init__(self, app: Callable, max_path: int = MAX_PATH_BYTES, max_head: int = MAX_HEAD_BYTES) -> None:
        self.app, self.max_path, self.max_head = app, max_path, max_head

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            refusal = None
            if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > self.max_path:
                refusal = (414, f"request target over {self.max_path} bytes")
            elif sum(len(key) + len(value) + 4 for key, value in scope["headers"]) > self.max_head:
                refusal = (431, f"request headers over {self.max_head} bytes")
            if refusal is not None:
                count_request("http", _endpoint(scope["path"]), "INVALID_ARGUMENT")
                response = _error(refusal[0], refusal[1], {"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def metrics_app() -> Starlette:
    """The metrics port: prometheus_client's exposition at /metrics (GET, HEAD), 404 elsewhere."""
    return Starlette(routes=[Route("/metrics", _metrics, methods=["GET"])])


def listen(address: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (port 0: a free one), so that a taken port fails the start at once."""
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
    # without it the response's headers and body (two writes) wait out the client's delayed ACK (40 ms).
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((address, port))
    # uvicorn's default backlog: a burst of callers connecting at once is queued, not reset.
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServers:
    """uvicorn servers (the OIP HTTP port, if any, and the metrics port) on one event loop in one thread."""

    def __init__(self, plane: DataPlane, address: str, http_port: int, metrics_port: int) -> None:
        self._plane = plane
        self._apps: list[tuple[object, socket.socket]] = []
        self.inference: InferenceApp | None = None
        self.port = 0
        self._servers: list[uvicorn.Server] = []
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._ready = threading.Event()
        self._http_port, self._metrics_port, self._address = http_port, metrics_port, address

    def bind(self, http: bool) -> None:
        """Bind the ports (in the caller's thread, so that an error surfaces there)."""
        if http:
            self.inference = InferenceApp(self._plane)
            sock = listen(self._address, self._http_port)
            self.port = sock.getsockname()[1]
            self._apps.append((HeadLimits(self.inference.app), sock))
        metrics_sock = listen(self._address, self._metrics_port)
        self.metrics_port = metrics_sock.getsockname()[1]
        self._apps.append((metrics_app(), metrics_sock))

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _config(self, app: object, grace_s: float) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=True,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=int(grace_s) or 1,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )

    def _run(self) -> None:
        # uvicorn's start and stop lines say nothing the server's own log does not
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.setLevel(logging.WARNING)
        uvicorn_log.addFilter(RateLimitFilter())  # its one line per garbage request, rate-limited
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        if self.inference is not None:
            self.inference.limiter = anyio.CapacityLimiter(self._plane.settings.rpc_threads)
        grace = self._plane.settings.grace_period_s
        self._servers = [uvicorn.Server(self._config(app, grace)) for app, _ in self._apps]
        tasks = [
            server.serve(sockets=[sock]) for server, (_, sock) in zip(self._servers, self._apps, strict=True)
        ]
        self._ready.set()
        await asyncio.gather(*tasks)

    def stop(self, grace_s: float) -> None:
        """Stop accepting, give in-flight requests `grace_s` (uvicorn's graceful shutdown), close."""
        for server in self._servers:
            server.should_exit = True
        self._thread.join(grace_s + 5)
