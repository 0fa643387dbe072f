"""Shadow mode's cost to callers: one version alone against a champion with a shadow challenger.

Starts `python -m sentclf_server` (PYTHONPATH: sentclf.server_images.SERVER_PYTHONPATH) twice on the model
directory given: alone, then with a copy of it as the challenger (version 2, ROUTE=shadow). Each time,
single-sentence gRPC requests (tritonclient) from 1, 16 and 64 callers: p50 at one caller, throughput at
16, and from the server's metrics the share of shadow copies done and dropped at each level. Loopback only.
    python bench/shadow_cost.py --model-dir /path/to/model [--requests 2000]
The last line reads `p50_c1_ratio=<x> throughput_c16_ratio=<y> shadow_done_c16=<a> shadow_done_c64=<b>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from sentclf.containers import free_ports
from sentclf.server_images import SERVER_PYTHONPATH

SENTENCES = ["the cat sat on the mat", "dog", "colorless green ideas sleep furiously", "the book was read"]


def _input(text: str) -> triton.InferInput:
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text], dtype=object))
    return tensor


def _load(url: str, callers: int, requests: int) -> tuple[list[float], float]:
    """Per-request latencies and requests/s of `callers` closed-loop gRPC callers."""
    latencies: list[float] = []
    lock = threading.Lock()
    left = [requests]
    start = threading.Barrier(callers + 1)

    def caller(index: int) -> None:
        with triton.InferenceServerClient(url) as client:
            start.wait()
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                began = time.perf_counter()
                client.infer("cola", [_input(SENTENCES[index % len(SENTENCES)])])
                with lock:
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, requests / (time.perf_counter() - began)


def _shadow_counts(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("sentclf_shadow_requests_total{"):
            counts[line.split('outcome="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return counts


def _run(model_dir: Path, challenger: Path | None, requests: int) -> dict:
    grpc_port, metrics_port = free_ports(2)
    env = {
        **os.environ,
        "PYTHONPATH": SERVER_PYTHONPATH,
        "MODEL_DIR": str(model_dir),
        "BIND_ADDRESS": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        "HTTP_PORT": "0",
    }
    if challenger is not None:
        env |= {"CHALLENGER_DIR": str(challenger), "CHALLENGER_VERSION": "2", "ROUTE": "shadow"}
    server = subprocess.Popen([sys.executable, "-m", "sentclf_server"], env=env, stderr=subprocess.DEVNULL)
    url = f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with triton.InferenceServerClient(url) as client:
                    if client.is_server_ready():
                        break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready")
            time.sleep(0.1)
        _load(url, 4, 200)  # warm-up
        result = {}
        for callers in (1, 16, 64):
            before = _shadow_counts(metrics_port)
            latencies, throughput = _load(url, callers, requests if callers > 1 else requests // 4)
            time.sleep(1.0)  # let the shadow queue settle
            after = _shadow_counts(metrics_port)
            delta = {key: after.get(key, 0) - before.get(key, 0) for key in ("done", "dropped", "failed")}
            total = sum(delta.values()) or float("nan")
            result[callers] = {
                "p50_ms": statistics.median(latencies) * 1000,
                "req_s": throughput,
                "shadow_done": delta["done"] / total if challenger is not None else float("nan"),
                "shadow_dropped": delta["dropped"] / total if challenger is not None else float("nan"),
            }
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        challenger = Path(tmp) / "challenger"
        shutil.copytree(args.model_dir, challenger)
        config = json.loads((challenger / "serving_config.json").read_text())
        (challenger / "serving_config.json").write_text(json.dumps({**config, "model_version": "2"}))
        alone = _run(args.model_dir, None, args.requests)
        shadow = _run(args.model_dir, challenger, args.requests)
    for callers in (1, 16, 64):
        a, s = alone[callers], shadow[callers]
        print(
            f"callers {callers:3d}: alone p50 {a['p50_ms']:.2f} ms {a['req_s']:.0f} req/s | shadow p50 "
            f"{s['p50_ms']:.2f} ms {s['req_s']:.0f} req/s, shadow copies done {s['shadow_done']:.0%} dropped "
            f"{s['shadow_dropped']:.0%}"
        )
    print(
        f"p50_c1_ratio={shadow[1]['p50_ms'] / alone[1]['p50_ms']:.2f} "
        f"throughput_c16_ratio={shadow[16]['req_s'] / alone[16]['req_s']:.2f} "
        f"shadow_done_c16={shadow[16]['shadow_done']:.2f} shadow_done_c64={shadow[64]['shadow_done']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
