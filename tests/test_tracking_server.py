"""The shared tracking server as a user runs it: `make tracking-server` (a real PostgreSQL, started by the
project, and `mlflow server --serve-artifacts`), then the tracking page's `MLFLOW_TRACKING_URI=... make run`
on a tiny configuration, then `make tracking-server-stop`: the lines of its block `tracking` as printed
(on ports of the test's own). With an http tracking URI no step mounts the host's
mlruns: every artifact must be in the server's own store."""

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import mlflow
import pytest

from sentclf.containers import free_ports
from sentclf.contract import STEP_TAG

from .conftest import REPO_ROOT, TEST_OUTPUT, remove_store_images, require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TINY = (
    "-P epochs=1 -P max_train_samples=128 -P use_cache=false -P label_audit=false -P requests_per_level=50"
    " -P latency_requests=200"
)


def make(
    target: str, env: dict[str, str], args: str = "", timeout_s: float = 1800
) -> subprocess.CompletedProcess:
    command = ["make", "--no-print-directory", target] + ([f"ARGS={args}"] if args else [])
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def typed(prefix: str, env: dict[str, str], timeout_s: float = 1800, **replace: str):
    """The tracking page's line that starts with `prefix`, in bash as printed (`replace`: old=new)."""
    command = typed_block("tracking").line(prefix)
    for old, new in replace.items():
        command = command.replace(old, new)
    return subprocess.run(
        ["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def server():
    """A tracking server of its own (ports and data directory), stopped and removed afterwards."""
    require_docker()
    directory = REPO_ROOT / ".build" / f"test-tracking-{uuid.uuid4().hex[:8]}"
    port, pg_port = free_ports(2)
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"TRACKING_DIR": str(directory), "TRACKING_PORT": str(port), "PG_PORT": str(pg_port)}
    started = typed("make tracking-server", env, timeout_s=600)
    assert started.returncode == 0, started.stdout + started.stderr
    yield url, directory, env
    stopped = typed("make tracking-server-stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # The cluster may live outside a directory the postgres user cannot reach (see the script).
    fallback = (
        Path("/var/lib/sentclf-tracking") / hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    )
    for path in (directory, fallback):
        subprocess.run(["rm", "-rf", str(path)], check=False)


def status(env: dict[str, str]) -> int:
    return subprocess.run(
        ["scripts/tracking-server.sh", "status"], cwd=REPO_ROOT, env=env, capture_output=True
    ).returncode


def test_the_pipeline_against_a_postgresql_tracking_server(server):
    url, directory, env = server
    assert status(env) == 0
    experiment = f"server-{uuid.uuid4().hex[:8]}"
    run_env = env | {"MLFLOW_EXPERIMENT_NAME": experiment}
    started = time.monotonic()
    # The page's line, on this server's port, with the tiny parameters added.
    port = url.rsplit(":", 1)[1]
    line = typed_block("tracking").line("MLFLOW_TRACKING_URI=http://127.0.0.1:5050")
    command = f"{line.replace(':5050', ':' + port)} ARGS='{TINY}'"
    result = subprocess.run(
        ["bash", "-c", command], cwd=REPO_ROOT, env=run_env, capture_output=True, text=True, timeout=1800
    )
    seconds = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "tracking-server.json").write_text(
        json.dumps({f"make run ARGS='{TINY}'": seconds}, indent=2)
    )

    client = mlflow.MlflowClient(tracking_uri=url)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {
        r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert parent.info.status == "FINISHED"
    assert set(children) == {"preprocess", "train", "building", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in children.values())
    version = children["train"].data.tags["registered_model_version"]
    assert "challenger" in client.get_model_version("cola-classifier", version).aliases

    # Every artifact went through the server into its own store; none touched the host's mlruns.
    for run in children.values():
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        stored = directory / "artifacts" / experiment_id / run.info.run_id / "artifacts"
        assert (stored / "logs").is_dir(), f"{run.data.tags[STEP_TAG]}: no artifacts in {stored}"
        assert not list((REPO_ROOT / "mlruns").glob(f"*/{run.info.run_id}"))
    assert (
        directory / "artifacts" / experiment_id / children["preprocess"].info.run_id / "artifacts" / "data"
    ).is_dir()
    # What a step's MLproject mounts when the page's line set this server as the tracking URI.
    step_env = run_env | {"MLFLOW_TRACKING_URI": url}
    volume = subprocess.run(
        ["scripts/artifact-volume"], cwd=REPO_ROOT, env=step_env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert ":" not in volume  # an anonymous volume: nothing of the host is mounted
    remove_store_images(client)


def test_stop_keeps_the_data_and_a_restart_serves_it_again(server):
    url, directory, env = server
    before = {e.name for e in mlflow.MlflowClient(tracking_uri=url).search_experiments()}
    stopped = make("tracking-server-stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert status(env) != 0
    restarted = make("tracking-server", env, timeout_s=600)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert {e.name for e in mlflow.MlflowClient(tracking_uri=url).search_experiments()} == before
