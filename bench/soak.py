"""Soak: the server image under steady load, checked for errors and for memory that keeps growing.

Starts the server image (its container, host network), sends single-sentence CoLA requests from
`--streams` concurrent tritonclient gRPC callers for `--duration-s` seconds, and samples the container's
memory (anonymous memory from the cgroup, i.e. without page cache) every `--sample-every-s` seconds.
Memory is "flat" when the mean of the last quarter of the samples is within `--max-growth-mb` of the mean
of the first quarter (samples taken after the warm-up requests); the least-squares slope is printed too.
The container is always removed. Exit status 1 when there were errors or memory grew.
The last line reads `soak_errors=<n> soak_requests=<n> memory_growth_mb=<x> verdict=<pass|fail>`.
Usage: python bench/soak.py [--server-image cola-classifier-server:1] [--streams 64] [--duration-s 60]
"""

import argparse
import logging
import signal
import sys
from pathlib import Path

import numpy as np

from sentclf import loadgen
from sentclf.containers import MemorySampler
from sentclf.engine import docker_client

import benchlib
from benchlib import BenchError

log = logging.getLogger("soak")


def memory_trend(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """(growth in MB: last quarter's mean minus first quarter's, least-squares slope in MB/minute)."""
    if len(samples) < 4:
        raise BenchError(f"only {len(samples)} memory samples: lengthen --duration-s or sample more often")
    seconds, megabytes = (np.array(column) for column in zip(*samples, strict=True))
    quarter = len(samples) // 4
    growth = float(megabytes[-quarter:].mean() - megabytes[:quarter].mean())
    slope_per_minute = float(np.polyfit(seconds, megabytes, 1)[0] * 60)
    return growth, slope_per_minute


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-image", help="default: the newest local image named *-server")
    parser.add_argument("--model", default="cola", help="model name the server serves")
    parser.add_argument("--streams", type=int, default=64, help="concurrent callers")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warm-up-requests", type=int, default=256)
    parser.add_argument("--sample-every-s", type=float, default=2.0)
    parser.add_argument("--max-growth-mb", type=float, default=16.0, help="allowed last-vs-first growth")
    parser.add_argument("--sentences", type=Path, default=benchlib.DEFAULT_SENTENCES)
    parser.add_argument("--start-timeout-s", type=float, default=60.0)
    return parser.parse_args(argv)


def soak(args: argparse.Namespace, image: str, sentences: list[str]) -> tuple[int, int, float]:
    with benchlib.server_container(image, {}, args.start_timeout_s) as (container, port, to_serving):
        log.info("%s SERVING after %.2f s; warm-up: %d requests", image, to_serving, args.warm_up_requests)
        callers = loadgen.grpc_callers(port, args.model)
        warm_up = loadgen.run_level(callers, sentences, args.streams, args.warm_up_requests, 60.0)
        sampler = MemorySampler(container, args.sample_every_s)
        sampler.start()
        log.info("soak: %d streams for %.0f s", args.streams, args.duration_s)
        try:
            load = loadgen.run_level(callers, sentences, args.streams, 10**9, args.duration_s)
        finally:
            sampler.stop()
        container.reload()
        if container.status != "running":
            raise BenchError(f"the server container is {container.status} after the soak")
    growth, slope = memory_trend(sampler.samples)
    memory = [mb for _, mb in sampler.samples]
    print(f"image {image}: {args.streams} streams, {load.wall_s:.1f} s")
    print(
        f"requests {len(load.latencies_s)} ok, {load.errors} errors (warm-up: {warm_up.errors} errors); "
        f"{load.throughput:.1f} req/s; p50 {load.percentile_ms(50):.1f} ms, "
        f"p99 {load.percentile_ms(99):.1f} ms"
    )
    print(
        f"memory (anon) MB: first {memory[0]:.1f}, last {memory[-1]:.1f}, min {min(memory):.1f}, "
        f"max {max(memory):.1f}; last-vs-first-quarter growth {growth:+.1f} MB, slope {slope:+.2f} MB/min "
        f"({len(memory)} samples)"
    )
    return load.errors + warm_up.errors, len(load.latencies_s), growth


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, benchlib.raise_interrupt)
    try:
        image = args.server_image or benchlib.newest_server_image(docker_client())
        errors, requests, growth = soak(args, image, benchlib.load_sentences(args.sentences, seed=0))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the server container was removed)", file=sys.stderr)
        return 130
    passed = errors == 0 and requests > 0 and growth <= args.max_growth_mb
    print(
        f"soak_errors={errors} soak_requests={requests} memory_growth_mb={growth:.1f} "
        f"verdict={'pass' if passed else 'fail'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
