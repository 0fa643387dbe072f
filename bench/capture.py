"""What traffic capture costs the server: throughput at concurrency 16 with capture on and off, one run.

The server (server, this checkout's code) runs as a process on the model files extracted from a
server image (the newest `*-server` image, or --server-image), once with CAPTURE_DIR unset and once with
CAPTURE_DIR set (text stored, every request sampled: the most work capture can do), alternately for
--rounds rounds each; the load is sentclf.loadgen's, single-sentence CoLA requests over gRPC, the evaluate
step's own. The last line reads `capture_throughput_ratio=<on/off> capture_on_rps=<x> capture_off_rps=<y>
captured=<records>`; the goal is a ratio >= 0.95.
Usage: python bench/capture.py [--server-image cola-classifier-server:1-abc] [--requests 1500] [--rounds 2]
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sentclf import loadgen
from sentclf.containers import free_port
from sentclf.engine import docker_client
from sentclf.kserve_client import connect
from sentclf.server_images import SERVER_PYTHONPATH

import benchlib

CONCURRENCY = 16


def start_server(model_dir: Path, log: Path, capture_dir: Path | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": SERVER_PYTHONPATH,
        "MODEL_DIR": str(model_dir),
        "BIND_ADDRESS": "127.0.0.1",
        "GRPC_PORT": str(port),
        "HTTP_PORT": "0",
        "METRICS_PORT": str(free_port()),
    }
    if capture_dir is not None:
        env["CAPTURE_DIR"] = str(capture_dir)
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "sentclf_server"], env=env, stdout=out, stderr=out)
    client = connect(port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                return process, port
        except Exception:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    stop(process)
    raise benchlib.BenchError(f"the server did not become ready; see {log}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    model_dir: Path, log: Path, capture_dir: Path | None, sentences: list[str], requests: int
) -> float:
    process, port = start_server(model_dir, log, capture_dir)
    try:
        level = loadgen.run_level(
            loadgen.grpc_callers(port, "cola"),
            sentences,
            CONCURRENCY,
            requests,
            warm_up=2,
            stop_on_error=True,
        )
    finally:
        stop(process)
    if level.errors:
        raise benchlib.BenchError(f"{level.errors} failed requests: {level.first_error}")
    return level.throughput


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-image", default="")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    client = docker_client()
    image = args.server_image or benchlib.newest_server_image(client)
    sentences = benchlib.load_sentences(benchlib.DEFAULT_SENTENCES, seed=0)
    with tempfile.TemporaryDirectory(prefix="sentclf-bench-capture-") as tmp:
        model_dir = benchlib.extract_model(client, image, Path(tmp))
        log = Path(tmp) / "server.log"
        capture_dir = Path(tmp) / "capture"
        capture_dir.mkdir()
        runs: dict[str, list[float]] = {"off": [], "on": []}
        for round_ in range(args.rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                rps = measure(model_dir, log, capture_dir if mode == "on" else None, sentences, args.requests)
                runs[mode].append(rps)
                print(
                    f"round {round_ + 1} capture {mode:3}: {rps:7.1f} req/s at concurrency {CONCURRENCY}",
                    flush=True,
                )
        captured = sum(len(p.read_text().splitlines()) for p in capture_dir.glob("capture-*.jsonl"))
    on, off = (sum(runs[m]) / len(runs[m]) for m in ("on", "off"))
    print(f"image {image}: model files served by this checkout's server, {args.requests} requests a run")
    figures = f"capture_on_rps={on:.1f} capture_off_rps={off:.1f} captured={captured}"
    print(f"capture_throughput_ratio={on / off:.3f} {figures}")


if __name__ == "__main__":
    main()
