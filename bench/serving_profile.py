"""Where a request's time and CPU go: the server image under the serving bench's load, plus the request
path's parts timed in-process.

Part 1 (`micro`, in this process): each step a request or a batch goes through, timed alone with timeit
(best of 5): BYTES codec, protobuf parse/serialise, our request checks and response building, metrics,
the tritonclient client's own request building and response parsing, tokenisation, padding, ORT for
one sentence and for batches of 8/16/32 with and without length buckets, bucket planning.

Part 2 (`load`): starts the server image (host network, as the bench does), then for each concurrency
sends single-sentence CoLA requests with the benches' tritonclient load (sentclf.loadgen.run_level) and
reads, per request: the client's CPU (this process), the server container's CPU (/proc of its main
process, all threads), other processes' CPU on the machine in the same window (noise), and from the
server's Prometheus metrics the time in tokenisation and in the model (padding, ORT, softmax), batch size,
ORT calls per batch and the padding share of the tokens the model computed. The ServerLive round trip is
measured first. Run each level `--repeats` times; the table shows every repeat.

With `--against-fp32` (an image whose version serves int8), the load part runs again with the version's
fp32 model (its train run's, from the tracking store) in place of the image's: where the int8 model's
gain goes between the model stage and the rest of a request.

Usage: python bench/serving_profile.py [--server-image IMAGE] [--concurrency 1,16,64]
                                       [--requests 300,2000,3000] [--repeats 2] [--parts micro,load]
                                       [--env MAX_CONCURRENT_BATCHES=1 ...] [--against-fp32]
"""

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from sentclf import loadgen
from sentclf.containers import free_port
from sentclf.engine import docker_client
from sentclf.kserve_client import build_inputs, requested_outputs
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.names import LEGACY_SERVED_NAME

import benchlib
from benchlib import CORES, BenchError

log = logging.getLogger("bench.serving_profile")
HZ = os.sysconf("SC_CLK_TCK")


# ---- part 1: in-process costs ------------------------------------------------------------------------------


def best_us(function, number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def micro(model_dir: Path, sentences: list[str]) -> list[tuple[str, float]]:
    """(what, microseconds) for each step, timed alone."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2

    benchlib.server_package()  # the server's own code, run here in-process
    from sentclf_server.codec import decode_bytes_tensor, encode_bytes_tensor
    from sentclf_server.config import load_settings
    from sentclf_server.metrics import ModelMetrics
    from sentclf_server.model import SentenceClassifier, plan_buckets
    from sentclf_server.service import build_response, parse_text_input
    from sentclf_server.service import requested_outputs as outputs_of

    settings = load_settings({"MODEL_DIR": str(model_dir), "ORT_INTRA_OP_THREADS": str(CORES)})
    model = SentenceClassifier(settings)
    model.warm_up()
    sentence = sentences[0]
    raw = encode_bytes_tensor([sentence.encode()])
    request = service_pb2.ModelInferRequest(model_name="cola")
    tensor = request.inputs.add(name="text", datatype="BYTES")
    tensor.shape.append(1)
    request.raw_input_contents.append(raw)
    request.outputs.add(name="label")
    request.outputs.add(name="probabilities")
    wire = request.SerializeToString()
    probs = model.predict([sentence])
    response = build_response(request, settings, probs, ["label", "probabilities"])
    response_wire = response.SerializeToString()
    rows = []

    def add(what: str, function, number: int = 2000) -> None:
        rows.append((what, best_us(function, number)))

    add(
        "client: build_inputs + requested_outputs (tritonclient objects)",
        lambda: (build_inputs([sentence]), requested_outputs()),
    )
    add(
        "client: InferResult from the response + as_numpy x2",
        lambda: (lambda r: (r.as_numpy("label"), r.as_numpy("probabilities")))(
            grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(response_wire))
        ),
    )
    add(
        f"protobuf: parse ModelInferRequest ({len(wire)} B)",
        lambda: service_pb2.ModelInferRequest.FromString(wire),
    )
    add("codec: decode the raw BYTES tensor", lambda: decode_bytes_tensor(raw))
    add(
        "server: parse_text_input + requested_outputs",
        lambda: (parse_text_input(request, 256), outputs_of(request)),
    )
    add(
        "server: build_response (argmax, raw outputs)",
        lambda: build_response(request, settings, probs, ["label", "probabilities"]),
    )
    add(f"protobuf: serialise ModelInferResponse ({len(response_wire)} B)", response.SerializeToString)
    metrics = ModelMetrics("cola", "1")
    add(
        "metrics: observe_request + observe_batch",
        lambda: (metrics.observe_request("grpc", "OK", 0.01), metrics.observe_batch(8)),
    )
    tokenizer = model.tokenizer
    add("tokenise 1 sentence (encode_batch_fast)", lambda: tokenizer.encode_batch_fast([sentence]))
    for size in (8, 32):
        batch = sentences[:size]
        add(
            f"tokenise {size} sentences (encode_batch_fast)",
            lambda b=batch: tokenizer.encode_batch_fast(b),
            200,
        )
        add(
            f"tokenise {size} sentences (encode_batch, with offsets)",
            lambda b=batch: tokenizer.encode_batch(b),
            200,
        )
    encodings = tokenizer.encode_batch_fast(sentences[:32])
    id_rows = [e.ids for e in encodings]
    add("pad 32 rows into input_ids/attention_mask/token_type_ids", lambda: model._feeds(id_rows, None), 500)
    lengths = sorted(len(r) for r in id_rows)
    add("plan_buckets for 32 sentences", lambda: plan_buckets(lengths, 32, model.run_cost_tokens), 500)
    add("predict 1 sentence (tokenise + ORT + softmax)", lambda: model.predict([sentence]), 50)
    for bucketing in (False, True):
        model.length_bucketing = bucketing
        for size in (8, 16, 32):
            batches = [sentences[i : i + size] for i in range(0, 256, size)]
            began = time.perf_counter()
            for batch in batches:
                model.predict(batch)
            per_sentence = (time.perf_counter() - began) / 256 * 1e6
            label = "length buckets" if bucketing else "one run, padded to the longest"
            rows.append((f"predict, batches of {size} in request order, {label}: per sentence", per_sentence))
    rows.append(
        (
            f"(one ORT call costs about {model.run_cost_tokens:.1f} sentence tokens: calibrated at warm-up)",
            float("nan"),
        )
    )
    return rows


# ---- part 2: the image under load --------------------------------------------------------------------------


def pid_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def machine_busy_s() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / HZ  # all but idle and iowait


def total(metric: dict[str, float], name: str) -> float:
    """A metric summed over its label sets (model, version, protocol); nan when absent."""
    values = [value for key, value in metric.items() if key.split("{", 1)[0] == name]
    return sum(values) if values else float("nan")


def scrape(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" not in sample.labels:
                values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def load(
    args: argparse.Namespace, image: str, sentences: list[str], model_file: Path | None = None
) -> list[dict]:
    """The load part's rows; `model_file`: served in place of the image's own model.onnx."""
    env = {"ORT_INTRA_OP_THREADS": str(CORES), "METRICS_PORT": str(args.metrics_port), **args.env}
    rows = []
    volumes = benchlib.model_volume(model_file)
    with benchlib.server_container(image, env, 120.0, volumes) as (container, port, _):
        container.reload()
        pid = container.attrs["State"]["Pid"]

        def snapshot() -> tuple[dict[str, float], float, float, float]:
            """(server metrics, server CPU s, this process's CPU s, the machine's busy CPU s)."""
            return scrape(args.metrics_port), pid_cpu_s(pid), loadgen.process_cpu_s(), machine_busy_s()

        callers = loadgen.grpc_callers(port, args.model)
        top = max(args.concurrency)
        loadgen.run_level(callers, sentences, top, 4 * top, 60.0)  # warm up
        floor = benchlib.round_trip_floor_ms(port, 300)
        log.info("ServerLive round trip p50 %.3f ms", floor)
        for repeat in range(args.repeats):
            for concurrency, requests in zip(args.concurrency, args.requests, strict=True):
                before = snapshot()
                result = loadgen.run_level(
                    callers, sentences, concurrency, requests, 120.0, offset=repeat * requests
                )
                after = snapshot()
                metric = {k: after[0].get(k, 0.0) - before[0].get(k, 0.0) for k in after[0]}
                n = len(result.latencies_s)
                server_cpu, client_cpu = after[1] - before[1], after[2] - before[2]
                others = (after[3] - before[3]) - server_cpu - client_cpu
                batches = total(metric, "sentclf_inference_batch_size_count") or float("nan")
                tokens = metric.get("sentclf_model_tokens_total{kind=sentence}", float("nan"))
                padding = metric.get("sentclf_model_tokens_total{kind=padding}", float("nan"))
                rows.append(
                    {
                        "repeat": repeat + 1,
                        "concurrency": concurrency,
                        "requests": n,
                        "errors": result.errors,
                        "req_per_s": result.throughput,
                        "p50_ms": result.percentile_ms(50),
                        "round_trip_ms": floor,
                        "client_cpu_us": 1e6 * client_cpu / n,
                        "server_cpu_us": 1e6 * server_cpu / n,
                        "others_cpu_us": 1e6 * others / n,
                        "busy_cores": (after[3] - before[3]) / result.wall_s,
                        "in_server_ms": 1e3
                        * total(metric, "sentclf_inference_request_duration_seconds_sum")
                        / n,
                        "tokenize_us": 1e6
                        * metric.get("sentclf_model_seconds_total{stage=tokenize}", np.nan)
                        / n,
                        "model_us": 1e6 * metric.get("sentclf_model_seconds_total{stage=model}", np.nan) / n,
                        "batch": total(metric, "sentclf_inference_batch_size_sum") / batches,
                        "runs_per_batch": metric.get("sentclf_model_runs_total{}", np.nan) / batches,
                        "padding_share": padding / (tokens + padding),
                    }
                )
                log.info("c=%d repeat %d: %s", concurrency, repeat + 1, json.dumps(rows[-1]))
    return rows


def print_load(rows: list[dict]) -> None:
    header = (
        "| c | run | req/s | p50 ms | in server ms | client CPU us | server CPU us | tokenise us | model us "
        "| batch | ORT calls/batch | padding | others' CPU us | busy cores |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    columns = [
        ("concurrency", "d"), ("repeat", "d"), ("req_per_s", ".0f"), ("p50_ms", ".2f"),
        ("in_server_ms", ".2f"),
        ("client_cpu_us", ".0f"), ("server_cpu_us", ".0f"), ("tokenize_us", ".0f"), ("model_us", ".0f"),
        ("batch", ".1f"), ("runs_per_batch", ".1f"), ("padding_share", ".0%"), ("others_cpu_us", ".0f"),
        ("busy_cores", ".2f"),
    ]  # fmt: skip
    for r in rows:
        print("| " + " | ".join(format(r[key], spec) for key, spec in columns) + " |")
    print(f"ServerLive round trip p50: {rows[0]['round_trip_ms']:.3f} ms" if rows else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-image", help="default: the newest local image named *-server")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", default="300,2000,3000", help="requests per level, one per concurrency")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", default="micro,load")
    parser.add_argument("--metrics-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--sentences", type=Path, default=benchlib.DEFAULT_SENTENCES)
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE server setting for the load part (repeatable)"
    )
    parser.add_argument(
        "--against-fp32",
        action="store_true",
        help="an int8 version's image: the load part again with its train run's fp32 model in place",
    )
    args = parser.parse_args(argv)
    args.env = dict(item.split("=", 1) for item in args.env)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.requests = [int(n) for n in args.requests.split(",")]
    if len(args.requests) != len(args.concurrency):
        parser.error("--requests needs one number per --concurrency level")
    args.parts = set(args.parts.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, benchlib.raise_interrupt)
    args.metrics_port = args.metrics_port or free_port()
    client = docker_client()
    try:
        image = args.server_image or benchlib.newest_server_image(client)
        sentences = benchlib.load_sentences(args.sentences, seed=0)
        settings = " ".join(f"{k}={v}" for k, v in args.env.items()) or "defaults"
        print(
            f"server image {image} ({settings}); {CORES} cores shared with other work; ORT threads {CORES}\n"
        )
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
            model_dir = benchlib.extract_model(client, image, Path(tmp))
            # The name the image answers to (a task's own, `spam` for spam-classifier; `cola` before).
            args.model = ServingConfig.read(model_dir).model_name or LEGACY_SERVED_NAME
            if "micro" in args.parts:
                rows = micro(model_dir, sentences)
                print("| step (in-process, timed alone, best of 5) | us |\n|---|---:|")
                for what, us in rows:
                    print(f"| {what} | {us:.1f} |" if us == us else f"| {what} | |")
                print()
            if "load" in args.parts:
                print_load(load(args, image, sentences))
            if "load" in args.parts and args.against_fp32:
                fp32 = benchlib.image_fp32_twin(image, Path(tmp))
                print(f"\nthe same image serving its version's fp32 twin ({fp32.name}, from the store):\n")
                print_load(load(args, image, sentences, fp32))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the server container was removed)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
