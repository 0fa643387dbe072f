"""Scoring many sentences, four ways, one model, one run: `python bench/batch_scoring.py`.

The model is the newest server image's (`*-server`) ONNX file, tokenizer and serving config, registered
here as the text-level pyfunc the train step registers, in a throw-away store (removed afterwards). The
sentences are CoLA's dev sentences repeated to `--sentences` (100,000). Printed: sentences/s of

- `pyfunc`: mlflow.pyfunc.load_model(...).predict(all sentences) in one process (ORT on every core);
- `spark_local`: the score sub-project (`mlflow run score`) on `local[*]`, scoring with spark_udf;
- `spark_cluster`: the same on a standalone cluster of one master and two workers (one core each);
- `grpc`: the server image under sentclf.loadgen (one sentence per request) at its best concurrency,

each as a ratio to `pyfunc`, and each way's peak memory (the process's max RSS; the sum over the score and
cluster containers, sampled each second; the server container's). The Spark figures are the score run's own
`sentences_per_second` (scoring, from the first task to the last row back at the driver); the wall time of
the whole `mlflow run` (JVM start, model download, input, output) is printed beside it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import mlflow
import pandas as pd

from sentclf import loadgen
from sentclf.engine import containers_where, docker_client
from sentclf.images import score_image
from sentclf.spark_cluster import standalone_cluster

import benchlib

ONE_PROCESS = """
import json, resource, sys, time
import mlflow
texts = open(sys.argv[2]).read().split("\\n")
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(texts[:64])
began = time.perf_counter()
out = model.predict(texts)
seconds = time.perf_counter() - began
print(json.dumps({"seconds": seconds, "rows": len(out),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "classes": out["class"].tolist()}))
"""


class ContainerMemory(threading.Thread):
    """The peak of the summed memory of every running container of the score image, sampled each second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        engine = docker_client()
        while not self.done.is_set():
            total = 0.0
            for container in containers_where(engine, stopped=False, ancestor=score_image()):
                try:
                    stats = container.stats(stream=False)
                    memory = stats["memory_stats"]
                    total += (memory.get("usage", 0) - memory.get("stats", {}).get("inactive_file", 0)) / 1e6
                except Exception:  # noqa: BLE001 (a container that just ended)
                    continue
            self.peak_mb = max(self.peak_mb, total)
            self.done.wait(1.0)

    def stop(self) -> float:
        self.done.set()
        self.join(timeout=30)
        return self.peak_mb


def register(model_dir: Path, env: dict[str, str], work: Path) -> str:
    """The server image's model as a registered text-level pyfunc in the throw-away store."""
    benchlib.use_steps("train")
    import pyfunc_model

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    experiment = mlflow.create_experiment(env["MLFLOW_EXPERIMENT_NAME"], artifact_location=env["ARTIFACTS"])
    with mlflow.start_run(experiment_id=experiment):
        files = [model_dir / n for n in ("model.onnx", "tokenizer.json", "serving_config.json")]
        info = pyfunc_model.log_text_model(*files, registered_model_name="bench-batch")
    return f"models:/bench-batch/{info.registered_model_version}"


def run_score(env: dict[str, str], input_file: Path, output: Path, master: str) -> dict:
    command = [sys.executable, "-m", "mlflow", "run", str(benchlib.REPO_ROOT / "score"),
               "-P", f"input={input_file}", "-P", f"output={output}", "-P", "model=models:/bench-batch/1",
               "-P", f"spark_master={master}", "-A", "network=host"]  # fmt: skip
    sampler = ContainerMemory()
    sampler.start()
    began = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    peak = sampler.stop()
    if result.returncode != 0:
        raise benchlib.BenchError(f"mlflow run score on {master} failed:\n{result.stderr[-4000:]}")
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(env["MLFLOW_EXPERIMENT_NAME"]).experiment_id
    run = client.search_runs([experiment], "tags.`sentclf.step` = 'score'", order_by=["start_time DESC"])[0]
    classes = pd.read_parquet(output / "scores.parquet")["class"].tolist()
    return {
        "rate": run.data.metrics["sentences_per_second"],
        "wall": wall,
        "peak_mb": peak,
        "classes": classes,
    }


def grpc_best(image: str, sentences: list[str], requests: int, levels: list[int]) -> tuple[float, int, float]:
    with benchlib.server_container(image, {}, 60) as (container, port, _):
        measured, samples = loadgen.sweep(
            loadgen.grpc_callers(port, "cola"), sentences, levels, requests, container
        )
    best = max(measured, key=lambda level: level.throughput)
    return best.throughput, best.concurrency, max((mb for _, mb in samples), default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--server-image", default="")
    parser.add_argument("--grpc-requests", type=int, default=3000, help="requests per concurrency level")
    parser.add_argument("--grpc-levels", default="16,64")
    args = parser.parse_args()
    engine = docker_client()
    image = args.server_image or benchlib.newest_server_image(engine)
    if not engine.images.list(name=score_image()):
        raise benchlib.BenchError(f"no {score_image()}: run `make score-image` first")
    cola = benchlib.load_sentences(benchlib.DEFAULT_SENTENCES, seed=0)
    texts = [cola[i % len(cola)] for i in range(args.sentences)]
    tag = uuid.uuid4().hex[:8]
    state = benchlib.REPO_ROOT / ".build" / f"bench-batch-{tag}"  # the store; its artifacts under mlruns/
    artifacts = benchlib.REPO_ROOT / "mlruns" / f"bench-batch-{tag}"
    state.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env |= {
        "MLFLOW_TRACKING_URI": f"sqlite:///{state}/mlflow.db",
        "MLFLOW_EXPERIMENT_NAME": f"bench-batch-{tag}",
        "ARTIFACTS": str(artifacts),
    }
    figures: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sentclf-bench-batch-", dir=state) as tmp:
            work = Path(tmp)
            uri = register(benchlib.extract_model(engine, image, work), env, work)
            text_file = work / "sentences.txt"
            text_file.write_text("\n".join(texts))
            input_file = work / "sentences.parquet"
            pd.DataFrame({"text": texts}).to_parquet(input_file)
            one = subprocess.run(
                [sys.executable, "-c", ONE_PROCESS, uri, str(text_file)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(one.stdout.strip().splitlines()[-1])
            figures["pyfunc"] = {"rate": result["rows"] / result["seconds"], "wall": result["seconds"],
                                 "peak_mb": result["peak_mb"], "classes": result["classes"]}  # fmt: skip
            print(f"pyfunc one process: {figures['pyfunc']['rate']:.0f} sentences/s", flush=True)
            figures["spark_local"] = run_score(env, input_file, work / "out-local", "local[*]")
            print(f"spark_udf local[*]: {figures['spark_local']['rate']:.0f} sentences/s", flush=True)
            with standalone_cluster(workers=2, cores_per_worker=1) as cluster:
                figures["spark_cluster"] = run_score(
                    env, input_file, work / "out-cluster", cluster.master_url
                )
            print(f"score on 2 workers: {figures['spark_cluster']['rate']:.0f} sentences/s", flush=True)
        levels = [int(level) for level in args.grpc_levels.split(",")]
        rate, level, peak = grpc_best(image, cola, args.grpc_requests, levels)
        figures["grpc"] = {"rate": rate, "wall": float("nan"), "peak_mb": peak, "classes": None}
    finally:
        mlflow.set_tracking_uri(None)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(artifacts, ignore_errors=True)
    base = figures["pyfunc"]["rate"]
    same = all(
        figures[w]["classes"] == figures["pyfunc"]["classes"] for w in ("spark_local", "spark_cluster")
    )
    print(f"model from {image}; {args.sentences} sentences (CoLA dev repeated); {benchlib.CORES} cores")
    for way, figure in figures.items():
        note = f" (best of concurrency {args.grpc_levels}: {level})" if way == "grpc" else ""
        print(
            f"{way:14} {figure['rate']:8.0f} sentences/s  ratio {figure['rate'] / base:5.2f}  "
            f"peak {figure['peak_mb']:7.0f} MB  wall {figure['wall']:6.1f} s{note}"
        )
    print(
        " ".join(f"{way}_ratio={figure['rate'] / base:.3f}" for way, figure in figures.items())
        + f" same_labels={str(same).lower()}"
    )


if __name__ == "__main__":
    main()
