"""The Open Inference Protocol over HTTP/JSON: a thin shell over the data plane (dataplane.py).

The stack is the standard library's ThreadingHTTPServer, HTTP/1.1 with keep-alive: one thread per
connection, and an infer request's thread is the one that waits in the batcher or leads a batch, exactly
like a gRPC handler thread, so a request never hops threads or an event loop. It adds nothing to the
image. Bodies go through http_codec.py; limits (body size, sentences, length) through the data plane.

Routes (`{model}` optionally followed by `/versions/{version}`):
  GET  /v2/health/live, /v2/health/ready    200, or 400 when not ready (empty bodies, as the protocol says)
  GET  /v2                                  server metadata
  GET  /v2/models/{model}                   model metadata
  GET  /v2/models/{model}/ready             200, or 400 when not ready (an unknown model is not ready)
  GET  /v2/models/{model}/config            Triton's model configuration (the class names)
  POST /v2/models/{model}/infer             inference
Errors are the protocol's `{"error": "..."}` with 400 (bad request), 404 (unknown model or path),
405 (method), 411 (no Content-Length), 413 (body over MAX_MESSAGE_BYTES), 503 (loading, shutting down,
too many connections), 500 (internal).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .dataplane import HTTP_STATUS, DataPlane, InferenceError
from .http_codec import HEADER_LENGTH, BadRequest, encode_infer_response, error_body, parse_infer_request
from .metrics import count_request
from .outputs import LABEL_NAMES_PARAMETER, encode_outputs, label_names_json, output_metadata

log = logging.getLogger(__name__)

EXTENSIONS = ["model_configuration", "binary_tensor_data"]
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer|config))?$")
# A refused body is read and thrown away up to this size (so the client sees the 413, not a reset);
# beyond it the connection is closed.
_DRAIN_LIMIT = 64 * 1024 * 1024
_JSON = "application/json"
_CONFIG_TYPES = {"BYTES": "TYPE_STRING", "INT64": "TYPE_INT64", "FP32": "TYPE_FP32"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The listen backlog. socketserver's default of 5 overflows when a burst of clients connects at once
    # (16 callers starting together, a load balancer opening its pool): the kernel drops or resets the
    # connections beyond it, which then wait a second for a SYN retransmit or fail with ECONNRESET.
    # uvicorn's default is 2048; the kernel caps it at net.core.somaxconn.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], plane: DataPlane, max_connections: int) -> None:
        super().__init__(address, _Handler)
        self.plane = plane
        self.closing = False
        self.connections = threading.BoundedSemaphore(max_connections)
        self.active = 0
        self.active_lock = threading.Condition()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self.connections.acquire(blocking=False):
            count_request("http", "connection", "RESOURCE_EXHAUSTED")
            body = error_body("too many connections; retry")
            head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {_JSON}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            with contextlib.suppress(OSError):
                request.sendall(head.encode() + body)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sentclf-server"
    timeout = 60  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    # -- answering ------------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes = b"", kind: str = _JSON, extra: dict[str, str] | None = None
    ) -> None:
        """The whole response in one write (no Nagle delay between headers and body)."""
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}"]
        if body or status != 200:
            lines.append(f"Content-Type: {kind}")
        lines.append(f"Content-Length: {len(body)}")
        for key, value in (extra or {}).items():
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, error_body(message))

    def _status(self, ok: bool) -> None:
        self._send(200 if ok else 400)

    # -- reading --------------------------------------------------------------------------------------

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            length = int(raw)
        except ValueError:
            return -1
        return length if length >= 0 else -1

    def _discard(self, length: int) -> None:
        if length > _DRAIN_LIMIT or getattr(self, "_body_withheld", False):
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def handle_expect_100(self) -> bool:
        """Refuse an over-size body before the client sends it (curl asks with Expect: 100-continue)."""
        length = self._content_length()
        if length is not None and length > self.server.plane.limits.max_message_bytes:
            self._body_withheld = True  # answered without reading it, and the connection closed
            return True
        return super().handle_expect_100()

    # -- routing --------------------------------------------------------------------------------------

    def _route(self, method: str) -> tuple[str, str | None, str | None, str | None]:
        """(endpoint, model, version, action) for metrics and dispatch."""
        path = self.path.split("?", 1)[0]
        if path in ("/v2/health/live", "/v2/health/ready"):
            return "health_" + path.rsplit("/", 1)[-1], None, None, None
        if path in ("/v2", "/v2/"):
            return "server_metadata", None, None, None
        match = _MODEL_PATH.match(path)
        if match:
            name, version, action = match.groups()
            return f"model_{action or 'metadata'}", name, version, action
        return "unknown", None, None, None

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        endpoint, name, version, _ = self._route(method)
        code = "OK"
        with self.server.active_lock:
            self.server.active += 1
        try:
            if method != "POST" and self._content_length():
                self._discard(self._content_length() or 0)
            if self.server.closing:
                self.close_connection = True
                code = "UNAVAILABLE"
                self._error(503, "server is shutting down")
            elif endpoint == "unknown":
                code = "NOT_FOUND"
                self._error(404, f"no such endpoint: {self.path}")
            elif (endpoint == "model_infer") != (method == "POST"):
                code = "UNIMPLEMENTED"
                self._error(405, f"{method} is not allowed on {self.path}")
            elif endpoint == "model_infer":
                code = self._infer(name, version)
            else:
                code = self._get(endpoint, name, version)
        except (ConnectionError, TimeoutError):
            code = "CANCELLED"
            self.close_connection = True
        finally:
            count_request("http", endpoint, code)
            with self.server.active_lock:
                self.server.active -= 1
                self.server.active_lock.notify_all()

    def _get(self, endpoint: str, name: str | None, version: str | None) -> str:
        plane = self.server.plane
        if endpoint == "health_live":
            self._status(True)
        elif endpoint == "health_ready":
            self._status(plane.ready)
        elif endpoint == "server_metadata":
            self._send(200, _dumps(plane.server_metadata(EXTENSIONS)))
        elif endpoint == "model_ready":
            self._status(plane.model_ready(name, version))
        else:
            try:
                plane.check_model(name, version)
            except InferenceError as err:
                self._error(HTTP_STATUS[err.code], err.message)
                return err.code
            body = plane.model_metadata() if endpoint == "model_metadata" else _model_config(plane)
            self._send(200, _dumps(body))
        return "OK"

    def _infer(self, name: str, version: str | None) -> str:
        plane = self.server.plane
        length = self._content_length()
        if length is None or length < 0:
            self.close_connection = True
            plane.metrics.observe_refusal("http", "INVALID_ARGUMENT")
            self._error(411, "an infer request needs a Content-Length (chunked bodies are not accepted)")
            return "INVALID_ARGUMENT"
        with plane.track("http") as outcome:
            try:
                plane.check_model(name, version)
                plane.check_size(length)
            except InferenceError as err:
                self._discard(length)
                outcome.code = err.code
                self._error(HTTP_STATUS[err.code], err.message)
                return err.code
            body = self.rfile.read(length)
            try:
                status, payload, extra = self._answer(plane, body)
            except InferenceError as err:
                outcome.code = err.code
                status, payload, extra = HTTP_STATUS[err.code], error_body(err.message), None
            except Exception:
                log.exception("infer over HTTP failed")
                outcome.code = "INTERNAL"
                message = "internal error during inference; see server log"
                status, payload, extra = 500, error_body(message), None
        self._send(status, payload, extra=extra)
        return outcome.code

    def _answer(self, plane: DataPlane, body: bytes) -> tuple[int, bytes, dict[str, str] | None]:
        header_length = self.headers.get(HEADER_LENGTH)
        try:
            request = parse_infer_request(body, int(header_length) if header_length is not None else None)
        except (BadRequest, ValueError) as exc:
            raise InferenceError("INVALID_ARGUMENT", str(exc)) from None
        plane.check_count(len(request.texts))
        probs = plane.infer(request.texts)
        settings = plane.settings
        tensors = encode_outputs(probs, settings.labels, request.outputs)
        payload, json_length = encode_infer_response(
            settings.model_name, settings.model_version, request.id, tensors, request.binary
        )
        if json_length is None:
            return 200, payload, None
        return 200, payload, {HEADER_LENGTH: str(json_length)}


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _model_config(plane: DataPlane) -> dict:
    """Triton's model configuration as its HTTP endpoint spells it (see service.model_config)."""
    settings = plane.settings
    return {
        "name": settings.model_name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": 0,
        "input": [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [
            {"name": name, "data_type": _CONFIG_TYPES[datatype], "dims": shape}
            for name, datatype, shape in output_metadata(len(settings.labels))
        ],
        "parameters": {LABEL_NAMES_PARAMETER: {"string_value": label_names_json(settings.labels)}},
    }


class HttpServer:
    """The HTTP listener: started beside the gRPC server, drained with it."""

    def __init__(self, plane: DataPlane, address: str, port: int, max_connections: int) -> None:
        self._server = _Server((address, port), plane, max_connections)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_s: float) -> None:
        """Refuse new requests (503, connection closed), give in-flight ones `grace_s`, close."""
        server = self._server
        server.closing = True
        server.shutdown()  # stops accepting; open keep-alive connections answer 503 from now on
        deadline = time.monotonic() + grace_s
        with server.active_lock:
            while server.active and time.monotonic() < deadline:
                server.active_lock.wait(max(0.0, deadline - time.monotonic()))
        server.server_close()
