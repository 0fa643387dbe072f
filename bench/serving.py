"""Serving speed: our KServe v2 server (server), over gRPC and over HTTP/JSON, vs KServe's Python
ModelServer (gRPC and HTTP), Seldon MLServer (gRPC) and raw in-process ONNX Runtime, in one run on the same
ONNX model + tokenizer, clients and load.

Every contender serves the model files extracted from the server image and runs them through the same
tokenizer + InferenceSession code (sentclf_server.model) with the same ORT settings; the load is
single-sentence CoLA requests, one client per concurrent caller (sentclf.loadgen, the evaluate step's own
load): the standard tritonclient gRPC client, and for HTTP one keep-alive http.client connection per caller
posting the protocol's JSON (no binary extension), the same client for ours and KServe's.
KServe and MLServer live in their own virtualenvs under .build/bench/ (their pins conflict), created on
first use. Prints latency/throughput per contender and concurrency, raw ORT limits, ratios, image sizes;
the last line reads
`throughput_ratio_vs_mlserver=<x> throughput_ratio_vs_kserve=<y> throughput_ratio_vs_raw_ort=<z>
throughput_ratio_vs_raw_ort_c64=<z64> client_ceiling_ratio=<ceiling>
p50_c1_minus_raw_single_and_round_trip_ms=<ms> http_ratio_vs_grpc=<h> http_ratio_vs_kserve_http=<k>`:
throughput ratios at --ratio-concurrency (16) and at the top concurrency (64), the most any server could
reach given the client's own CPU on the same cores, our p50 at concurrency 1 above raw ORT's
single-sentence p50 plus the bare ServerLive round trip, and our HTTP's throughput at --ratio-concurrency
over our gRPC's and over KServe's HTTP (goal: >= 0.8 and >= 1.5). A peer left out (--peers) reads nan.
With --against-fp32 (an image whose version serves int8, `-P serve_variant=int8`), the same image also
serves its train run's fp32 model (`onnx_variants/model.onnx`, found through the image's model labels and
the tracking store) as contender `ours-fp32`, and the line adds `int8_ratio_vs_fp32=<x>` and
`int8_ratio_vs_fp32_c<top>=<y>`: what int8 buys through the whole server, not only inside ONNX Runtime.
Usage: python bench/serving.py [--server-image cola-classifier-server:3-0123456789ab]
                               [--concurrency 1,4,16,64] [--requests 400] [--peers kserve,mlserver]
                               [--against-fp32] [--sentences file.txt]
"""

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from sentclf import loadgen
from sentclf.containers import LOOPBACK, free_port, free_ports
from sentclf.engine import docker_client
from sentclf.images import step_image
from sentclf.kserve_client import LABEL_OUTPUT, build_inputs, connect, requested_outputs
from sentclf.metrics import percentile_ms
from sentclf.server_images import SERVER_PYTHONPATH
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.names import LEGACY_SERVED_NAME

import benchlib
from benchlib import CORES, BenchError

log = logging.getLogger("bench.serving")

PEERS_DIR = benchlib.REPO_ROOT / "bench" / "serving_peers"
DEFAULT_VENV_DIR = benchlib.REPO_ROOT / ".build" / "bench"
# pip packages per peer; never torch (the peers only need ORT + tokenizers). uvloop 0.22+ breaks
# MLServer 1.7's parallel workers ("There is no current event loop", SeldonIO/MLServer#2286), hence the cap.
PEER_PACKAGES = {
    "kserve": ["kserve", "onnxruntime", "tokenizers"],
    "mlserver": ["mlserver", "uvloop<0.22", "onnxruntime", "tokenizers"],
}
# A venv is reused when this runs in it; otherwise it is (re)created.
PEER_PROBES = {
    "kserve": "import kserve, onnxruntime, tokenizers",
    "mlserver": "import mlserver, onnxruntime, tokenizers, uvloop; "
    "assert tuple(map(int, uvloop.__version__.split('.')[:2])) < (0, 22)",
}
RAW_BATCH_SIZES = (8, 16, 32, 64)
RAW_AT_ONCE = (1, 2)  # batches run at once: 2 is the server's default MAX_CONCURRENT_BATCHES


# ---- peer virtualenvs and processes ------------------------------------------------------------------------


def ensure_venv(peer: str, venv_root: Path) -> Path:
    """The peer's virtualenv python, created (python3 -m venv + pip install) on first use."""
    venv = venv_root / f"{peer}-venv"
    python = venv / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", PEER_PROBES[peer]], capture_output=True).returncode == 0
    ):
        return python
    packages = PEER_PACKAGES[peer]
    print(
        f"creating virtualenv {venv} with {' '.join(packages)} (first use; takes a few minutes)", flush=True
    )
    venv_root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    log_path = venv_root / f"{peer}-pip.log"
    with log_path.open("w") as pip_log:
        result = subprocess.run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", *packages],
            stdout=pip_log,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise BenchError(f"pip install {' '.join(packages)} failed for {peer}; see {log_path}")
    return python


def _log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the peer's whole process group (MLServer forks workers), SIGKILL what outlives the grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)  # raises once no process of the group is left
            except ProcessLookupError:
                return
            time.sleep(0.1)
    log.warning("process group %d still present after SIGKILL", process.pid)


def wait_until_ready(
    process: subprocess.Popen, port: int, model: str, log_path: Path, timeout_s: float
) -> float:
    """Poll gRPC ServerReady + ModelReady (tritonclient); fail fast if the process exits."""
    started = time.monotonic()
    client = connect(port)
    try:
        while time.monotonic() - started < timeout_s:
            if process.poll() is not None:
                raise BenchError(
                    f"peer exited with {process.returncode} during start-up:\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(InferenceServerException):
                if client.is_server_ready(client_timeout=1.0) and client.is_model_ready(
                    model, client_timeout=1.0
                ):
                    return time.monotonic() - started
            time.sleep(0.1)
    finally:
        client.close()
    raise BenchError(f"peer not ready after {timeout_s:.0f}s:\n{_log_tail(log_path)}")


@contextlib.contextmanager
def running_peer(
    name: str,
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    port: int,
    model: str,
    timeout_s: float,
    http_port: int | None = None,
) -> Iterator[tuple[int, int | None, float]]:
    """Start a peer server as its own process group on loopback; yields (grpc_port, http_port or None
    when its HTTP side is not measured, seconds to ready); always stops it, on success or failure."""
    log_path = workdir / f"{name}.log"
    with log_path.open("w") as peer_log:
        # start_new_session: the peer and its children form one group that stop_process_group can end.
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=peer_log, stderr=subprocess.STDOUT, start_new_session=True
        )
    log.info("started %s (pid %d, gRPC port %d)", name, process.pid, port)
    try:
        seconds = wait_until_ready(process, port, model, log_path, timeout_s)
        log.info("%s ready after %.2fs", name, seconds)
        yield port, http_port, seconds
    finally:
        stop_process_group(process)
        log.info("stopped %s", name)


def peer_env(model_dir: Path, model: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PEERS_DIR), SERVER_PYTHONPATH]),  # peer_common's imports
        "PYTHONUNBUFFERED": "1",
        "BENCH_MODEL_DIR": str(model_dir),
        "BENCH_MODEL_NAME": model,
        "BENCH_ORT_THREADS": str(CORES),
    }


def kserve_peer(python: Path, model_dir: Path, model: str, workdir: Path, timeout_s: float):
    """KServe ModelServer: --grpc_port is its gRPC flag (it binds [::]; REST on --http_port binds 0.0.0.0,
    both on free ports, and we only ever call 127.0.0.1). One uvicorn worker; per-request latency log off
    (our server logs no line per request either). Yields (grpc_port, http_port, seconds to ready)."""
    grpc_port, http_port = free_ports(2)
    command = [
        str(python), str(PEERS_DIR / "kserve_server.py"),
        "--grpc_port", str(grpc_port), "--http_port", str(http_port),
        "--workers", "1", "--enable_latency_logging", "false",
    ]  # fmt: skip
    env = peer_env(model_dir, model)
    return running_peer("kserve", command, env, workdir, grpc_port, model, timeout_s, http_port)


def write_mlserver_settings(root: Path, model: str, parallel_workers: int, max_batch_size: int) -> int:
    """settings.json + <model>/model-settings.json for `mlserver start root`; returns the gRPC port.
    Loopback only, free ports, metrics server off (ours exports metrics, but nobody scrapes during the
    bench), debug off (it turns on a gRPC access-log line per request)."""
    grpc_port, http_port, metrics_port = free_ports(3)
    settings = {
        "debug": False,
        "host": LOOPBACK,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_endpoint": None,
        "parallel_workers": parallel_workers,
        "load_models_at_startup": True,
    }
    model_settings: dict = {"name": model, "implementation": "mlserver_runtime.ColaRuntime"}
    if max_batch_size > 1:
        # MLServer's adaptive batching, set like our dynamic batcher (32 sentences, 2 ms).
        model_settings.update(max_batch_size=max_batch_size, max_batch_time=0.002)
    (root / model).mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    (root / model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return grpc_port


def mlserver_peer(
    python: Path, model_dir: Path, model: str, workdir: Path, timeout_s: float, workers: int, batch: int
):
    root = workdir / "mlserver-repo"
    grpc_port = write_mlserver_settings(root, model, workers, batch)
    command = [str(python.parent / "mlserver"), "start", str(root)]
    return running_peer("mlserver", command, peer_env(model_dir, model), workdir, grpc_port, model, timeout_s)


# ---- load --------------------------------------------------------------------------------------------------


def label_agreement(port: int, model: str, sentences: list[str], reference: np.ndarray) -> int:
    """How many of the reference sentences the server labels over gRPC as raw ORT does (same model =>
    all)."""
    client = connect(port)
    try:
        labels = [
            int(
                client.infer(model, build_inputs([s]), outputs=requested_outputs())
                .as_numpy(LABEL_OUTPUT)
                .reshape(-1)[0]
            )
            for s in sentences
        ]
    finally:
        client.close()
    return int((np.asarray(labels) == reference).sum())


def http_label_agreement(port: int, model: str, sentences: list[str], reference: np.ndarray) -> int:
    """The same over the protocol's HTTP/JSON (one keep-alive connection)."""
    caller = loadgen.HttpCaller(port, model)
    try:
        labels = [caller.labels(s)[0] for s in sentences]
    finally:
        caller.close()
    return int((np.asarray(labels) == reference).sum())


def wait_until_http_ready(port: int, timeout_s: float) -> None:
    """GET /v2/health/ready until 200 (a server's HTTP side may come up after its gRPC side)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if benchlib.http_status(port, "/v2/health/ready") == 200:
            return
        time.sleep(0.1)
    raise BenchError(f"HTTP port {port} not ready after {timeout_s:.0f}s")


@dataclass
class ContenderResult:
    name: str
    port: int
    seconds_to_ready: float
    agreement: str
    round_trip_floor_ms: float
    new_caller: Callable[[], loadgen.Caller]
    levels: dict[int, loadgen.Level] = field(default_factory=dict)


def start_and_warm_up(
    name: str, start: Callable, stack: contextlib.ExitStack, args, sentences, reference
) -> list[ContenderResult]:
    """Start a contender (stopped when `stack` closes), check its labels, warm it up with one burst at
    the top concurrency (thread pools, ORT allocations for the shapes it will see). One result for its
    gRPC side (`name`) and, when it has an HTTP port, one for its HTTP side (`name-http`), warmed up and
    checked the same way."""
    log.info("starting %s", name)
    port, http_port, seconds = stack.enter_context(start())
    top = max(args.concurrency)
    sample = sentences[: len(reference)]
    agree = label_agreement(port, args.model, sample, reference)
    callers = loadgen.grpc_callers(port, args.model)
    loadgen.run_level(callers, sentences, top, 2 * top, args.level_time_limit_s)
    floor = benchlib.round_trip_floor_ms(port)
    results = [ContenderResult(name, port, seconds, f"{agree}/{len(reference)}", floor, callers)]
    if http_port:
        wait_until_http_ready(http_port, args.start_timeout_s)
        agree = http_label_agreement(http_port, args.model, sample, reference)
        callers = loadgen.http_callers(http_port, args.model)
        loadgen.run_level(callers, sentences, top, 2 * top, args.level_time_limit_s)
        floor = benchlib.http_round_trip_floor_ms(http_port)
        agreement = f"{agree}/{len(reference)}"
        results.append(ContenderResult(f"{name}-http", http_port, seconds, agreement, floor, callers))
    return results


def measure_all(starters: list[tuple[str, Callable]], args, sentences, reference) -> list[ContenderResult]:
    """All contenders up at once (idle ones cost no CPU: ORT does not spin), then every concurrency level
    in `args.rounds` rounds, rotating the contenders' order each round (a server's gRPC and HTTP sides
    are two contenders). The cores are shared with other work, so interleaving spreads its bursts over
    all contenders instead of penalising whichever ran while it peaked."""
    with contextlib.ExitStack() as stack:
        results = [
            result
            for name, start in starters
            for result in start_and_warm_up(name, start, stack, args, sentences, reference)
        ]
        per_round = max(1, args.requests // args.rounds)
        for concurrency in args.concurrency:
            for result in results:
                result.levels[concurrency] = loadgen.Level(concurrency)
            for round_index in range(args.rounds):
                shift = round_index % len(results)
                for result in results[shift:] + results[:shift]:
                    chunk = loadgen.run_level(
                        result.new_caller,
                        sentences,
                        concurrency,
                        per_round,
                        args.level_time_limit_s / args.rounds,
                        offset=round_index * per_round,
                    )
                    result.levels[concurrency].add(chunk)
            for result in results:
                level = result.levels[concurrency]
                log.info(
                    "c=%d %-12s %d ok, %d errors, %.1f req/s, p50 %.2f ms",
                    concurrency,
                    result.name,
                    len(level.latencies_s),
                    level.errors,
                    level.throughput,
                    level.percentile_ms(50),
                )
    return results


# ---- raw ORT -----------------------------------------------------------------------------------------------


def peer_common():
    """The peers' shared code (serving_peers/peer_common.py): the model's runtime (our server's scorer) with
    the peers' settings, run here in-process as raw ORT."""
    return benchlib.load_module("peer_common", PEERS_DIR)


@dataclass
class RawOrt:
    single_p50_ms: float
    batched: dict[tuple[int, int], float]  # (sentences per batch, batches at once) -> sentences/s
    sorted_batched: float  # batches of 32 cut from the sentences sorted by length: what no server sees
    reference_labels: np.ndarray

    @property
    def best_config(self) -> tuple[int, int]:
        return max(self.batched, key=self.batched.__getitem__)

    @property
    def best_batched(self) -> float:
        return self.batched[self.best_config]

    def best_of(self, other: "RawOrt") -> "RawOrt":
        """The better figure of two runs: the limit is what ORT can do when the shared cores let it."""
        batched = {key: max(rate, other.batched[key]) for key, rate in self.batched.items()}
        return RawOrt(
            min(self.single_p50_ms, other.single_p50_ms),
            batched,
            max(self.sorted_batched, other.sorted_batched),
            self.reference_labels,
        )


def _sentences_per_s(classifier, batches: list[list[str]], at_once: int) -> float:
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        list(pool.map(classifier.predict, batches[:at_once]))  # the first runs of new shapes allocate
        began = time.perf_counter()
        list(pool.map(classifier.predict, batches))
        return sum(len(b) for b in batches) / (time.perf_counter() - began)


def measure_raw_ort(model_dir: Path, sentences: list[str], singles: int, reference_count: int) -> RawOrt:
    """The same tokenizer + InferenceSession + predict() as the server's, called in-process: the
    single-sentence p50, and sentences/s for batches of RAW_BATCH_SIZES consecutive sentences in request
    order (not sorted by length across batches; inside a batch predict() cuts the server's length
    buckets), run one at a time and RAW_AT_ONCE at a time as the server's batcher may; the best of those
    is the ceiling any server on this machine can reach. Plus, for reference only, batches cut from the
    sentences sorted by length. Runs while no server is up."""
    classifier = peer_common().load_classifier(str(model_dir), max_batch_size=max(RAW_BATCH_SIZES))
    reference = np.array([int(np.argmax(classifier.predict([s]))) for s in sentences[:reference_count]])
    latencies = []
    for sentence in sentences[:singles]:
        began = time.perf_counter()
        classifier.predict([sentence])
        latencies.append(time.perf_counter() - began)
    batched = {}
    for size in RAW_BATCH_SIZES:
        classifier.max_batch_size = size  # as the server's MAX_BATCH_SIZE: buckets of at most this many
        batches = [sentences[i : i + size] for i in range(0, len(sentences) - size + 1, size)]
        for at_once in RAW_AT_ONCE:
            batched[(size, at_once)] = _sentences_per_s(classifier, batches, at_once)
    by_length = sorted(sentences, key=lambda s: len(classifier.tokenizer.encode(s).ids))
    classifier.max_batch_size = 32
    sorted_rate = _sentences_per_s(
        classifier, [by_length[i : i + 32] for i in range(0, len(by_length), 32)], 1
    )
    return RawOrt(percentile_ms(latencies, 50), batched, sorted_rate, reference)


# ---- report ------------------------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def print_report(
    results: list[ContenderResult], raw: RawOrt, args: argparse.Namespace, sizes, ours: str
) -> None:
    at = args.ratio_concurrency
    print(
        f"\nserving bench: {args.server_image}, model '{args.model}', {CORES} cores shared with other work, "
        f"ORT intra-op threads {CORES}, graph optimisation all; up to {args.requests} requests per level"
    )
    print(
        f"peers: kserve {args.peer_versions.get('kserve', 'left out')} (1 worker, latency log off), mlserver "
        f"{args.peer_versions.get('mlserver', 'left out')} (parallel_workers={args.mlserver_workers}, "
        f"adaptive batching {args.mlserver_batch or 'off'}, metrics off, debug off); {args.rounds} "
        "interleaved rounds/level; *-http: the protocol's JSON over one keep-alive connection per caller\n"
    )
    print(f"{'contender':<22} {'conc':>5} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'ok':>6} {'errors':>6}")
    for result in results:
        for concurrency, level in result.levels.items():
            p50, p99 = level.percentile_ms(50), level.percentile_ms(99)
            print(
                f"{result.name:<22} {concurrency:>5} {p50:>9.2f} {p99:>9.2f} {level.throughput:>9.1f} "
                f"{len(level.latencies_s):>6} {level.errors:>6}"
            )
    print("\nstart -> ready (s), labels equal to raw ORT, ServerLive (HTTP: GET /v2/health/live) p50 (ms):")
    for result in results:
        print(
            f"  {result.name:<22} {result.seconds_to_ready:6.2f}   {result.agreement:>7}   "
            f"{result.round_trip_floor_ms:5.2f}"
        )
    print(
        f"\nraw ORT in-process, best of before/after the servers: single p50 {raw.single_p50_ms:.2f} ms; "
        "sentences/s for batches of N consecutive sentences in request order (not sorted by length across "
        "batches; inside a batch predict() cuts the server's length buckets), one or two batches at a time:"
    )
    for size in RAW_BATCH_SIZES:
        rates = "  ".join(f"{at_once} at once {raw.batched[(size, at_once)]:7.1f}" for at_once in RAW_AT_ONCE)
        print(f"  batch {size:>3}: {rates}")
    size, at_once = raw.best_config
    print(
        f"  best: batch {size}, {at_once} at once, {raw.best_batched:.1f} sentences/s; for reference, "
        f"batches of 32 cut from the length-sorted sentences (no server sees those): {raw.sorted_batched:.1f}"
    )
    ours_result = next(r for r in results if r.name == ours)
    by_name = {r.name: r.levels[at].throughput for r in results}
    ours_tp = by_name[ours]
    top = max(args.concurrency)
    top_tp = ours_result.levels[top].throughput
    nan = float("nan")
    http_tp = by_name.get(f"{ours}-http", nan)
    print(f"\nratios (throughput at concurrency {at}):")
    for name, throughput in by_name.items():
        if name != ours:
            print(f"  ours / {name:<20} {ratio(ours_tp, throughput):.2f}")
    print(f"  ours-http / ours (gRPC)   {ratio(http_tp, ours_tp):.2f} (goal >= 0.8)")
    print(f"  ours-http / kserve-http   {ratio(http_tp, by_name.get('kserve-http', nan)):.2f} (goal >= 1.5)")
    print(
        f"  ours / raw ORT best batched {ratio(ours_tp, raw.best_batched):.2f} (at concurrency {top}: "
        f"{ratio(top_tp, raw.best_batched):.2f})"
    )
    # The load's client runs on the same cores and raw ORT has none: with c CPU-seconds per request of
    # client and raw ORT's R sentences/s on all cores, no server can exceed R / (1 + c R / cores).
    client_us = ours_result.levels[at].client_cpu_us_per_request
    ceiling = 1 / (1 + client_us * 1e-6 * raw.best_batched / CORES)
    print(
        f"  the client's own CPU: {client_us:.0f} us per request at concurrency {at} "
        f"({ours_result.levels[top].client_cpu_us_per_request:.0f} at {top}); on {CORES} shared cores that "
        f"caps any server at {ceiling:.2f} x raw ORT best batched"
    )
    lowest = min(args.concurrency)
    ours_p50 = ours_result.levels[lowest].percentile_ms(50)
    floor = ours_result.round_trip_floor_ms
    own = ours_p50 - raw.single_p50_ms - floor
    print(f"  our p50 at concurrency {lowest} - raw ORT single p50: {ours_p50 - raw.single_p50_ms:+.2f} ms")
    print(f"    of which the ServerLive round trip {floor:.2f} ms, the rest {own:+.2f} ms")
    server_mb, step_mb = sizes
    if server_mb and step_mb:
        print(
            f"\nimage size: {args.server_image} {server_mb:.0f} MB vs {step_image()} {step_mb:.0f} MB "
            f"(ratio {server_mb / step_mb:.3f})"
        )
    print(
        f"throughput_ratio_vs_mlserver={ratio(ours_tp, by_name.get('mlserver', nan)):.2f} "
        f"throughput_ratio_vs_kserve={ratio(ours_tp, by_name.get('kserve', nan)):.2f} "
        f"throughput_ratio_vs_raw_ort={ratio(ours_tp, raw.best_batched):.2f} "
        f"throughput_ratio_vs_raw_ort_c{top}={ratio(top_tp, raw.best_batched):.2f} "
        f"client_ceiling_ratio={ceiling:.2f} "
        f"p50_c{lowest}_minus_raw_single_and_round_trip_ms={own:.2f} "
        f"http_ratio_vs_grpc={ratio(http_tp, ours_tp):.2f} "
        f"http_ratio_vs_kserve_http={ratio(http_tp, by_name.get('kserve-http', nan)):.2f}"
        + int8_ratios(results, ours, at, top)
    )


def int8_ratios(results: list[ContenderResult], ours: str, at: int, top: int) -> str:
    """` int8_ratio_vs_fp32=<x> int8_ratio_vs_fp32_c<top>=<y>` when the fp32 twin ran (--against-fp32)."""
    by_name = {r.name: r for r in results}
    twin = by_name.get(f"{ours}-fp32")
    if twin is None:
        return ""
    mine = by_name[ours]
    return (
        f" int8_ratio_vs_fp32={ratio(mine.levels[at].throughput, twin.levels[at].throughput):.2f}"
        f" int8_ratio_vs_fp32_c{top}={ratio(mine.levels[top].throughput, twin.levels[top].throughput):.2f}"
    )


# ---- main --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-image", help="default: the newest local image named *-server")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated caller counts")
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--level-time-limit-s", type=float, default=60.0, help="stop a level after this")
    parser.add_argument("--ratio-concurrency", type=int, default=16, help="where the ratios are taken")
    parser.add_argument("--sentences", type=Path, default=benchlib.DEFAULT_SENTENCES)
    parser.add_argument("--venv-dir", type=Path, default=DEFAULT_VENV_DIR, help="where the peer venvs live")
    parser.add_argument("--start-timeout-s", type=float, default=180.0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per concurrency level")
    parser.add_argument(
        "--mlserver-workers", type=int, default=0, help="MLServer parallel_workers (its default is 1)"
    )
    parser.add_argument(
        "--mlserver-batch", type=int, default=0, help="MLServer adaptive batching max_batch_size (0: off)"
    )
    parser.add_argument(
        "--peers", default="kserve,mlserver", help="comma-separated peers to run (kserve, mlserver; '' none)"
    )
    parser.add_argument(
        "--against-fp32",
        action="store_true",
        help="the image serves int8: also serve its train run's fp32 model from the same image (ours-fp32)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(args.peers) - set(PEER_PACKAGES))
    if unknown:
        parser.error(f"unknown peers {unknown}: choose from {sorted(PEER_PACKAGES)}")
    args.concurrency = sorted({int(c) for c in args.concurrency.split(",")})
    if args.ratio_concurrency not in args.concurrency:
        parser.error(f"--ratio-concurrency {args.ratio_concurrency} is not in --concurrency")
    return args


def package_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip() or "?"


def contenders(args, model_dir: Path, workdir: Path) -> list[tuple[str, Callable]]:
    """(name, context manager factory yielding (grpc_port, http_port or None, seconds to ready)), ours
    first, then the peers in --peers."""

    @contextlib.contextmanager
    def ours(model_file: Path | None = None):
        http_port = free_port()
        env = {
            "ORT_INTRA_OP_THREADS": str(CORES),
            "ORT_GRAPH_OPTIMIZATION": "all",
            "HTTP_PORT": str(http_port),
        }
        # The same image with another model.onnx in place of its own (the fp32 twin of an int8 model).
        volumes = benchlib.model_volume(model_file)
        with benchlib.server_container(args.server_image, env, args.start_timeout_s, volumes) as (_, port, s):
            yield port, http_port, s

    pythons = {peer: ensure_venv(peer, args.venv_dir) for peer in args.peers}
    args.peer_versions = {peer: package_version(python, peer) for peer, python in pythons.items()}
    timeout = args.start_timeout_s
    starters: list[tuple[str, Callable]] = [("ours", ours)]
    if args.against_fp32:
        fp32 = benchlib.image_fp32_twin(args.server_image, workdir)
        log.info("fp32 twin of %s: %s", args.server_image, fp32)
        starters.append(("ours-fp32", lambda: ours(fp32)))
    if "kserve" in pythons:
        starters.append(
            ("kserve", lambda: kserve_peer(pythons["kserve"], model_dir, args.model, workdir, timeout))
        )
    if "mlserver" in pythons:
        starters.append(
            (
                "mlserver",
                lambda: mlserver_peer(
                    pythons["mlserver"],
                    model_dir,
                    args.model,
                    workdir,
                    timeout,
                    args.mlserver_workers,
                    args.mlserver_batch,
                ),
            )
        )
    return starters


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, benchlib.raise_interrupt)
    client = docker_client()
    try:
        args.server_image = args.server_image or benchlib.newest_server_image(client)
        sentences = benchlib.load_sentences(args.sentences, args.seed)
        with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
            workdir = Path(tmp)
            model_dir = benchlib.extract_model(client, args.server_image, workdir)
            args.model = ServingConfig.read(model_dir).model_name or LEGACY_SERVED_NAME
            log.info("model '%s' from %s in %s", args.model, args.server_image, model_dir)
            starters = contenders(args, model_dir, workdir)
            log.info("raw ORT in-process (before the servers start)")
            raw = measure_raw_ort(model_dir, sentences, singles=200, reference_count=64)
            results = measure_all(starters, args, sentences, raw.reference_labels)
            log.info("raw ORT in-process (after the servers stopped)")
            raw = raw.best_of(measure_raw_ort(model_dir, sentences, singles=200, reference_count=64))
        sizes = tuple(benchlib.image_size_mb(client, image) for image in (args.server_image, step_image()))
        print_report(results, raw, args, sizes, ours="ours")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (containers and peer processes were stopped)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
