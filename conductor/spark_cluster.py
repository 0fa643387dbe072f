"""`make spark-cluster`: a standalone Spark cluster from the score image, held in the foreground until Ctrl-C,
for a user's `mlflow run score -P spark_master=spark://127.0.0.1:7077 -A network=host` in a second terminal.

    python -m conductor.spark_cluster [--port 7077] [--workers 2] [--cores-per-worker 1]

The cluster itself (a master and workers on the host network, bound to 127.0.0.1, all removed on leaving)
is `sentclf.spark_cluster.standalone_cluster`, the one the tests and benches start.
"""

import argparse
import signal
import socket
import sys
import threading

from sentclf.containers import LOOPBACK
from sentclf.spark_cluster import standalone_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conductor.spark_cluster", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=7077, help="the master's port (default 7077)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores-per-worker", type=int, default=1)
    parser.add_argument("--memory-per-worker", default="1g")
    args = parser.parse_args(argv)
    with socket.socket() as probe:
        if probe.connect_ex((LOOPBACK, args.port)) == 0:
            parser.error(
                f"port {args.port} is taken on {LOOPBACK}: stop what holds it, or SPARK_PORT=<another>"
            )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    with standalone_cluster(
        args.workers, args.cores_per_worker, args.memory_per_worker, port=args.port
    ) as cluster:
        print(
            f"Spark master {cluster.master_url} with {cluster.workers} workers of {cluster.cores_per_worker}"
            f" core(s), web UI {cluster.ui_url}",
            flush=True,
        )
        print("Ctrl-C stops and removes them.", flush=True)
        stop.wait()
    print(f"removed {cluster.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
