"""Mixed soak: good and bad callers at once, over HTTP and gRPC, with idle and slow connections held open.

`--callers` threads (half HTTP, half gRPC) send requests for `--duration-s` seconds (or `--max-requests`);
every fourth request of a caller is bad in one of the ways a protocol probe tries (a lone surrogate, bytes
that are not UTF-8, JSON nested 30,000 deep, malformed JSON, a repeated output, a wrong method, a body over
the limit, an unknown model, a garbage request line) and must get its own 4xx / gRPC code, while every good
request must be answered 200 / OK with its own rows. Meanwhile `--idle` TCP connections to the HTTP port
are held open without a byte, `--slow` more send a request's headers a byte a second (slowloris), and a
new caller connects every half second: each of its requests must be answered. The server's resident
memory is sampled: its steady state is taken after a warm-up of good requests, and the end of the soak
must be within `--max-memory-ratio` of it. Loopback only.

`run_soak` is what tests/server/test_server_soak.py runs in a short version; this script runs the full one
against `python -m sentclf_server` (its PYTHONPATH: the server and the model's runtime,
sentclf.server_images.SERVER_PYTHONPATH) on the model directory given:
    python bench/mixed_soak.py --model-dir /path/to/model [--callers 64 --duration-s 60 --idle 1000]
The last line reads `failed_good=<n> good=<n> bad=<n> memory_ratio=<x> verdict=<pass|fail>`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from sentclf.containers import free_ports
from sentclf.server_images import SERVER_PYTHONPATH

SENTENCES = ["the cat sat on the mat", "dog", "colorless green ideas sleep furiously", "héllo wörld"]


def _json_body(texts: list[str], **extra: object) -> bytes:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
    return json.dumps({"inputs": [tensor], **extra}).encode()


# name -> (method, path suffix, body, expected status). The body over the limit is made per run.
def http_bad_requests(max_message_bytes: int) -> dict[str, tuple[str, str, bytes, int]]:
    return {
        "lone surrogate": ("POST", "infer", _json_body(["ok", "bad \ud800 text"]), 400),
        "deep JSON": ("POST", "infer", b"[" * 30_000 + b"]" * 30_000, 400),
        "malformed JSON": ("POST", "infer", b'{"inputs": [', 400),
        "repeated output": ("POST", "infer", _json_body(["a"], outputs=[{"name": "label"}] * 2), 400),
        "wrong method": ("PUT", "infer", b"", 405),
        "over the limit": ("POST", "infer", _json_body(["x" * (max_message_bytes + 1)]), 413),
        "unknown model": ("POST", "nope", _json_body(["a"]), 404),
    }


def _grpc_request(texts: list[bytes], model: str = "cola") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(texts)
    return request


def grpc_bad_requests(max_message_bytes: int) -> dict[str, tuple[service_pb2.ModelInferRequest, str]]:
    repeated = _grpc_request([b"a"])
    repeated.outputs.add(name="label")
    repeated.outputs.add(name="label")
    mismatch = _grpc_request([b"a"])
    mismatch.inputs[0].shape[0] = 3
    return {
        "surrogate bytes": (
            _grpc_request([b"ok", "bad \ud800".encode("utf-8", "surrogatepass")]),
            "INVALID_ARGUMENT",
        ),
        "not UTF-8": (_grpc_request([b"\xff\xfe"]), "INVALID_ARGUMENT"),
        "repeated output": (repeated, "INVALID_ARGUMENT"),
        "shape mismatch": (mismatch, "INVALID_ARGUMENT"),
        "unknown model": (_grpc_request([b"a"], model="nope"), "NOT_FOUND"),
        "over the limit": (_grpc_request([b"x" * (max_message_bytes + 1)]), "RESOURCE_EXHAUSTED"),
    }


@dataclass
class SoakResult:
    good: int = 0
    bad: int = 0
    failed_good: list[str] = field(default_factory=list)
    wrong_bad: list[str] = field(default_factory=list)  # a bad request that got an unexpected answer
    new_callers: int = 0
    failed_new_callers: list[str] = field(default_factory=list)
    steady_rss_mb: float = 0.0
    end_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    idle_open_at_end: int = 0

    @property
    def memory_ratio(self) -> float:
        return self.end_rss_mb / self.steady_rss_mb if self.steady_rss_mb else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class _Run:
    def __init__(self, host: str, http_port: int, grpc_port: int, max_message_bytes: int) -> None:
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.http_bad_cases = list(http_bad_requests(max_message_bytes).items())
        self.grpc_bad_cases = list(grpc_bad_requests(max_message_bytes).items())
        self.result = SoakResult()
        self.lock = threading.Lock()

    def _good(self, ok: bool, what: str) -> None:
        with self.lock:
            self.result.good += 1
            if not ok:
                self.result.failed_good.append(what)

    def _bad(self, ok: bool, what: str) -> None:
        with self.lock:
            self.result.bad += 1
            if not ok:
                self.result.wrong_bad.append(what)

    # -- HTTP -----------------------------------------------------------------------------------------

    def _http_connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.http_port, timeout=60)

    def http_good(
        self, connection: http.client.HTTPConnection, rng: random.Random
    ) -> http.client.HTTPConnection:
        texts = rng.sample(SENTENCES, rng.randint(1, len(SENTENCES)))
        try:
            connection.request("POST", "/v2/models/cola/infer", _json_body(texts))
            response = connection.getresponse()
            body = response.read()
            ok = response.status == 200 and json.loads(body)["outputs"][0]["shape"] == [len(texts)]
            self._good(ok, f"http {response.status} {body[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            self._good(False, f"http {exc!r}")
            connection.close()
            connection = self._http_connection()
        return connection

    def http_bad(self, index: int) -> None:
        name, (method, suffix, body, status) = self.http_bad_cases[index % len(self.http_bad_cases)]
        connection = self._http_connection()  # a refusal may close its connection
        try:
            connection.request(
                method, f"/v2/models/{'cola/infer' if suffix == 'infer' else 'nope/infer'}", body
            )
            response = connection.getresponse()
            answer = response.read()
            ok = response.status == status and "error" in json.loads(answer)
            self._bad(ok, f"http {name}: {response.status} {answer[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            self._bad(False, f"http {name}: {exc!r}")
        finally:
            connection.close()

    def garbage_line(self) -> None:
        try:
            with socket.create_connection((self.host, self.http_port), timeout=30) as sock:
                sock.sendall(b"GARBAGE \x00\x01\r\n\r\n")
                answer = sock.recv(256)
            self._bad(answer.startswith(b"HTTP/1.1 4"), f"garbage line: {answer[:80]!r}")
        except OSError as exc:
            self._bad(False, f"garbage line: {exc!r}")

    # -- gRPC -----------------------------------------------------------------------------------------

    def grpc_good(self, stub: service_pb2_grpc.GRPCInferenceServiceStub, rng: random.Random) -> None:
        texts = rng.sample(SENTENCES, rng.randint(1, len(SENTENCES)))
        try:
            response = stub.ModelInfer(_grpc_request([t.encode() for t in texts]), timeout=60)
            self._good(list(response.outputs[0].shape) == [len(texts)], "grpc wrong shape")
        except grpc.RpcError as exc:
            self._good(False, f"grpc {exc.code().name} {exc.details()}")

    def grpc_bad(self, stub: service_pb2_grpc.GRPCInferenceServiceStub, index: int) -> None:
        name, (request, code) = self.grpc_bad_cases[index % len(self.grpc_bad_cases)]
        try:
            stub.ModelInfer(request, timeout=60)
            self._bad(False, f"grpc {name}: answered OK")
        except grpc.RpcError as exc:
            self._bad(exc.code().name == code, f"grpc {name}: {exc.code().name} {exc.details()}")


def _caller(run: _Run, protocol: str, seed: int, deadline: float, budget: list[int]) -> None:
    rng = random.Random(seed)
    index = 0
    if protocol == "http":
        connection = run._http_connection()
        try:
            while time.monotonic() < deadline and _take(run, budget):
                if index % 4 == 3:
                    run.garbage_line() if (index // 4) % 8 == 7 else run.http_bad(index // 4 + seed)
                else:
                    connection = run.http_good(connection, rng)
                index += 1
        finally:
            connection.close()
        return
    with grpc.insecure_channel(f"{run.host}:{run.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline and _take(run, budget):
            if index % 4 == 3:
                run.grpc_bad(stub, index // 4 + seed)
            else:
                run.grpc_good(stub, rng)
            index += 1


def _take(run: _Run, budget: list[int]) -> bool:
    with run.lock:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        return True


def _new_callers(run: _Run, stop: threading.Event) -> None:
    """A fresh connection every half second, one request each: nobody holding connections locks it out."""
    while not stop.wait(0.5):
        connection = run._http_connection()
        connection.timeout = 10
        try:
            connection.request("POST", "/v2/models/cola/infer", _json_body(["a new caller"]))
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException) as exc:
            ok, response = False, exc
        finally:
            connection.close()
        with run.lock:
            run.result.new_callers += 1
            if not ok:
                run.result.failed_new_callers.append(repr(response))


def _hold_connections(run: _Run, idle: int, slow: int, stop: threading.Event) -> list[socket.socket]:
    """`idle` connections that send nothing; `slow` that send a request's head a byte a second."""
    sockets = []
    for _ in range(idle + slow):
        sock = socket.create_connection((run.host, run.http_port), timeout=10)
        sockets.append(sock)
    head = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000

    def trickle() -> None:
        position = 0
        while not stop.wait(1.0):
            for sock in sockets[idle:]:
                with contextlib.suppress(OSError):
                    sock.send(head[position : position + 1])
            position = (position + 1) % len(head)

    threading.Thread(target=trickle, name="slowloris", daemon=True).start()
    return sockets


def _still_open(sockets: list[socket.socket]) -> int:
    """How many held connections the server has not closed (a closed one reads EOF at once)."""
    open_ = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            open_ += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


def run_soak(
    host: str,
    http_port: int,
    grpc_port: int,
    server_pid: int,
    max_message_bytes: int,
    callers: int = 64,
    duration_s: float = 60.0,
    max_requests: int = 10**9,
    idle: int = 1000,
    slow: int = 50,
    warm_up_requests: int = 4000,
    on_progress: Callable[[str], None] | None = None,
) -> SoakResult:
    """The mixed soak against a running server (its pid for memory); see the module's docstring."""
    run = _Run(host, http_port, grpc_port, max_message_bytes)
    # Warm-up: the soak's own mix from all its callers (good and bad, every path), so that the steady state
    # holds what that concurrency allocates once (threads, their stacks and malloc arenas, ORT's buffers).
    warm_budget = [warm_up_requests]
    threads = [
        threading.Thread(
            target=_caller, args=(run, ("http", "grpc")[i % 2], i, time.monotonic() + 60, warm_budget)
        )
        for i in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.result = SoakResult()
    time.sleep(0.5)
    steady = rss_mb(server_pid)
    stop = threading.Event()
    held = _hold_connections(run, idle, slow, stop)
    prober = threading.Thread(target=_new_callers, args=(run, stop), daemon=True)
    prober.start()
    peak = [steady]

    def sample() -> None:
        while not stop.wait(0.5):
            peak[0] = max(peak[0], rss_mb(server_pid))

    threading.Thread(target=sample, daemon=True).start()
    deadline = time.monotonic() + duration_s
    budget = [max_requests]
    threads = [
        threading.Thread(target=_caller, args=(run, ("http", "grpc")[i % 2], 100 + i, deadline, budget))
        for i in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    prober.join(timeout=15)
    result = run.result
    result.idle_open_at_end = _still_open(held[:idle])
    for sock in held:
        sock.close()
    time.sleep(1.0)
    result.steady_rss_mb, result.end_rss_mb, result.peak_rss_mb = steady, rss_mb(server_pid), peak[0]
    if on_progress:
        on_progress(f"held {idle} idle + {slow} slow connections; {result.idle_open_at_end} idle still open")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--max-memory-ratio", type=float, default=1.2)
    args = parser.parse_args()
    ports = dict(zip(("HTTP_PORT", "GRPC_PORT", "METRICS_PORT"), free_ports(3), strict=True))
    env = {
        **os.environ,
        "PYTHONPATH": SERVER_PYTHONPATH,
        "MODEL_DIR": str(args.model_dir),
        "BIND_ADDRESS": "127.0.0.1",
        "MAX_MESSAGE_BYTES": str(args.max_message_bytes),
        # glibc malloc as the image runs it (server/Dockerfile): two arenas, big buffers mmap-ed
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "MALLOC_TRIM_THRESHOLD_": "131072",
        **{key: str(value) for key, value in ports.items()},
    }
    server = subprocess.Popen([sys.executable, "-m", "sentclf_server"], env=env)
    try:
        _wait_ready(ports["HTTP_PORT"])
        result = run_soak(
            "127.0.0.1",
            ports["HTTP_PORT"],
            ports["GRPC_PORT"],
            server.pid,
            args.max_message_bytes,
            callers=args.callers,
            duration_s=args.duration_s,
            idle=args.idle,
            slow=args.slow,
            on_progress=print,
        )
        ready = _ready(ports["HTTP_PORT"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    passed = (
        not result.failed_good
        and not result.wrong_bad
        and not result.failed_new_callers
        and result.memory_ratio <= args.max_memory_ratio
        and ready
    )
    for line in (result.failed_good + result.wrong_bad + result.failed_new_callers)[:20]:
        print(line)
    print(
        f"good={result.good} bad={result.bad} new_callers={result.new_callers} "
        f"steady_rss_mb={result.steady_rss_mb:.0f} peak_rss_mb={result.peak_rss_mb:.0f} "
        f"end_rss_mb={result.end_rss_mb:.0f} ready={ready}"
    )
    print(
        f"failed_good={len(result.failed_good)} good={result.good} bad={result.bad} "
        f"memory_ratio={result.memory_ratio:.2f} verdict={'pass' if passed else 'fail'}"
    )
    return 0 if passed else 1


def _ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/v2/health/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _wait_ready(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _ready(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready on port {port} after {timeout_s}s")


if __name__ == "__main__":
    sys.exit(main())
