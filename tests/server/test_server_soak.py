"""The mixed soak, short: good and bad requests at once over HTTP and gRPC, with idle and slowloris
connections held open. Zero failed good requests, every bad one refused with its own code, new callers
answered, memory flat and the server alive and ready (bench/mixed_soak.py runs the full 60 s, 64 callers,
1,000 idle connections version)."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import mixed_soak  # noqa: E402

MAX_MESSAGE_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def soak_server(model_dir, server_factory, tmp_path_factory):
    # glibc malloc as the image runs it (server/Dockerfile), whose memory is what must stay flat
    malloc = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    server = server_factory(model_dir, tmp_path_factory.mktemp("soak") / "server.log", **malloc)
    yield server
    server.stop()


def test_mixed_soak_fails_no_good_request(soak_server) -> None:
    host, port = soak_server.http_url.split(":")
    result = mixed_soak.run_soak(
        host,
        int(port),
        soak_server.grpc_port,
        soak_server.proc.pid,
        MAX_MESSAGE_BYTES,
        callers=16,
        duration_s=8.0,
        # The 8 s bound the run, not the request count: a fast machine served 4,000 in under 2.5 s, and the
        # new-caller probe (one each half second) had made only 4 of its 5 calls.
        max_requests=40_000,
        idle=300,
        slow=20,
        warm_up_requests=800,
    )
    print(result)  # the counts and memory, with -s
    assert result.good > 200 and result.bad > 50, result
    assert result.failed_good == [], result.failed_good[:10]
    assert result.wrong_bad == [], result.wrong_bad[:10]
    assert result.new_callers >= 5 and result.failed_new_callers == [], result.failed_new_callers
    assert result.memory_ratio <= 1.2, (result.steady_rss_mb, result.peak_rss_mb, result.end_rss_mb)
    assert soak_server.exit_code() is None
    with urllib.request.urlopen(f"http://{soak_server.http_url}/v2/health/ready", timeout=5) as answer:
        assert answer.status == 200
    log = soak_server.log()
    assert "Traceback" not in log, log[-3000:]
    # one line per refusal at most, rate-limited: far fewer lines than bad requests
    assert log.count("refused with") < result.bad, log.count("refused with")
