"""The same tiny pipeline against the embedded SQLite store and against `make tracking-server`
(PostgreSQL + `mlflow server --serve-artifacts`), alternated in one run, so that the price of a shared
server (every parameter, metric and artifact over HTTP, no host mount of mlruns) is a ratio measured side
by side rather than two figures from different days.

Each run is the docs' command, `make run ARGS='...'` with the cache off, in a store of its own: a
SQLite file in a temporary directory, or the server (its cluster and artifacts in a temporary directory,
its own ports). Everything is removed afterwards: the server, the stores, the runs' server images.

The last line reads `embedded_s=<median> server_s=<median> server_over_embedded=<ratio>`.
Usage: python bench/tracking_server.py [--rounds 2]
"""

import argparse
import contextlib
import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import mlflow

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = "-P epochs=1 -P max_train_samples=128 -P use_cache=false"
MODEL = "cola-classifier"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make(target: str, env: dict[str, str], args: str = "") -> subprocess.CompletedProcess:
    command = ["make", "--no-print-directory", target] + ([f"ARGS={args}"] if args else [])
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)


def timed_run(env: dict[str, str]) -> float:
    """Seconds for the tiny `make run`; a failed run ends the bench with its output."""
    began = time.monotonic()
    result = make("run", env, TINY)
    seconds = time.monotonic() - began
    if result.returncode:
        sys.exit(f"make run failed against {env['MLFLOW_TRACKING_URI']}:\n{result.stderr[-4000:]}")
    return seconds


def remove_images(uri: str) -> None:
    """The server images this store's registered model owns (found by its image namespace)."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    namespace = client.get_registered_model(MODEL).tags.get("sentclf.image_namespace")
    engine = docker.from_env()
    for image in engine.images.list(filters={"label": f"sentclf.image_namespace={namespace}"}):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="runs against each store, alternated")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
    tag = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="sentclf-bench-tracking-", dir=REPO_ROOT / ".build"))
    # MLflow leaves a lock file per sqlite store in the temp dir: give this process and the runs one of ours.
    (tmp := root / "tmp").mkdir()
    tempfile.tempdir = str(tmp)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"TMPDIR": str(tmp)}
    server_env = base_env | {
        "TRACKING_DIR": str(root / "server"),
        "TRACKING_PORT": str(port := free_port()),
        "PG_PORT": str(free_port()),
    }
    embedded_uri, server_uri = f"sqlite:///{root}/mlflow.db", f"http://127.0.0.1:{port}"
    experiment = f"bench-tracking-{tag}"
    artifacts = REPO_ROOT / "mlruns" / experiment  # under mlruns: the steps mount it for a sqlite store
    mlflow.MlflowClient(tracking_uri=embedded_uri).create_experiment(experiment, str(artifacts))
    times: dict[str, list[float]] = {"embedded": [], "server": []}
    try:
        started = make("tracking-server", server_env)
        if started.returncode:
            sys.exit(f"make tracking-server failed:\n{started.stdout}{started.stderr}")
        print("round store    seconds", flush=True)
        for round_ in range(1, args.rounds + 1):
            for store, uri in (("embedded", embedded_uri), ("server", server_uri)):
                env = base_env | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": experiment}
                times[store].append(timed_run(env))
                print(f"{round_:>5} {store:<8} {times[store][-1]:7.1f}", flush=True)
    finally:
        for uri in (embedded_uri, server_uri):
            with contextlib.suppress(Exception):  # a store that never got a model has no images
                remove_images(uri)
        make("tracking-server-stop", server_env)
        # The cluster is the postgres user's, and lives outside TRACKING_DIR when that user cannot reach it.
        fallback = (
            Path("/var/lib/sentclf-tracking") / hashlib.sha256(str(root / "server").encode()).hexdigest()[:12]
        )
        subprocess.run(["rm", "-rf", str(root), str(artifacts), str(fallback)], check=False)
    embedded, server = statistics.median(times["embedded"]), statistics.median(times["server"])
    print(f"embedded_s={embedded:.1f} server_s={server:.1f} server_over_embedded={server / embedded:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
