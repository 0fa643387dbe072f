"""One small end-to-end run of the real pipeline: `mlflow run .` with four docker_env steps, a real
tracking store and registry, a real server image and gRPC traffic. Then a failing run.

Runs in its own sqlite store and experiment (artifacts under <repo>/mlruns/<experiment>, the root the
steps mount) and removes what it made: the artifact directory and the server image.
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import mlflow
import pytest

from sentclf.containers import CONTAINER_LABEL
from sentclf.images import STEP_IMAGE
from sentclf.tracking import STEP_TAG

from .conftest import REPO_ROOT, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

STEPS = ("preprocess", "train", "building", "evaluate")
TINY = {"epochs": "1", "max_train_samples": "256", "batch_size": "32", "max_seq_length": "64"}


@pytest.fixture(scope="module")
def pipeline_store(tmp_path_factory):
    """A tracking store + experiment for this module, and the names it leaves to clean up."""
    require_docker()
    tag = uuid.uuid4().hex[:8]
    store = tmp_path_factory.mktemp("e2e-store")
    uri = f"sqlite:///{store}/mlflow.db"
    artifact_dir = REPO_ROOT / "mlruns" / f"e2e-{tag}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(f"e2e-{tag}", artifact_location=str(artifact_dir))
    model_name = f"e2e-{tag}"
    yield {
        "uri": uri,
        "client": client,
        "experiment_id": experiment_id,
        "model_name": model_name,
        "dir": store,
    }
    shutil.rmtree(artifact_dir, ignore_errors=True)
    engine = docker.from_env()
    for image in engine.images.list(name=f"{model_name}-server"):
        for image_tag in image.tags:
            engine.images.remove(image_tag, force=True)


def mlflow_run(store: dict, parameters: dict[str, str], timeout_s: int = 1800) -> subprocess.CompletedProcess:
    """`mlflow run .` as `make run` runs it (a storage directory of its own), with the host processes'
    temp directory pointed at an empty one, which must be empty again afterwards."""
    run_dir = Path(store["dir"]) / uuid.uuid4().hex[:8]
    (run_dir / "tmp").mkdir(parents=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store["uri"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(run_dir / "tmp"),
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "run",
        str(REPO_ROOT),
        "--env-manager",
        "local",
        "--experiment-id",
        store["experiment_id"],
        "--storage-dir",
        str(run_dir / "storage"),
    ]
    for key, value in {"registered_model_name": store["model_name"], **parameters}.items():
        command += ["-P", f"{key}={value}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    leaked = sorted(p.name for p in (run_dir / "tmp").iterdir())
    assert leaked == [], f"the run left temp files behind: {leaked}"
    return result


def runs_of(store: dict) -> list:
    return store["client"].search_runs([store["experiment_id"]], order_by=["attributes.start_time ASC"])


def leftover_containers() -> list:
    """Server containers the steps started, and the step containers MLflow ran (`docker run --rm`)."""
    engine = docker.from_env()
    servers = engine.containers.list(all=True, filters={"label": CONTAINER_LABEL})
    steps = engine.containers.list(all=True, filters={"ancestor": STEP_IMAGE})
    return servers + steps


def test_pipeline_runs_end_to_end(pipeline_store):
    result = mlflow_run(pipeline_store, {**TINY, "use_cache": "false"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    client = pipeline_store["client"]
    runs = runs_of(pipeline_store)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = {
        r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == set(STEPS)
    assert [children[s].info.start_time for s in STEPS] == sorted(children[s].info.start_time for s in STEPS)
    for step, run in children.items():
        assert run.info.status == "FINISHED", step
        assert run.data.tags.get("mlflow.project.env") == "docker", step
        assert run.data.tags.get("mlflow.source.git.commit"), step
        assert any(a.path == "logs" for a in client.list_artifacts(run.info.run_id)), step

    preprocess = children["preprocess"]
    data = {a.path for a in client.list_artifacts(preprocess.info.run_id, "data")}
    assert data == {"data/train.parquet", "data/validation.parquet", "data/test.parquet"}
    assert preprocess.data.metrics["test_rows"] == 527

    train = children["train"]
    assert train.data.params["data_run_id"] == preprocess.info.run_id
    assert train.data.params["max_train_samples"] == "256"
    assert {"train_loss", "val_accuracy", "val_mcc"} <= set(train.data.metrics)
    assert train.data.metrics["parity_max_abs_diff"] <= 1e-4
    version = train.data.tags["registered_model_version"]
    model_version = client.get_model_version(pipeline_store["model_name"], version)
    assert "challenger" in model_version.aliases

    building = children["building"]
    image = building.data.tags["server_image"]
    assert image == f"{pipeline_store['model_name']}-server:{version}"
    assert docker.from_env().images.get(image)
    assert building.data.metrics["server_image_size_mb"] > 0
    assert client.get_model_version(pipeline_store["model_name"], version).tags["server_image"] == image

    evaluate = children["evaluate"]
    metrics = evaluate.data.metrics
    for name in ("test_accuracy", "test_mcc", "latency_p50_ms", "latency_p99_ms", "throughput_rps"):
        assert name in metrics, name
    assert 0.5 < metrics["test_accuracy"] <= 1.0  # at least the majority class (~69%) after one tiny epoch
    assert metrics["throughput_errors"] == 0
    figures = {a.path for a in client.list_artifacts(evaluate.info.run_id, "evaluation")}
    assert "evaluation/test_confusion_matrix.png" in figures
    assert 0 < metrics["latency_p50_ms"] <= metrics["latency_p99_ms"]
    # The first evaluated version becomes champion through the gate.
    assert "champion" in client.get_model_version(pipeline_store["model_name"], version).aliases
    assert parent.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert leftover_containers() == []


def test_failing_step_fails_the_pipeline_with_a_clear_message(pipeline_store):
    result = mlflow_run(pipeline_store, {**TINY, "epochs": "0"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "epochs must be >= 1" in output
    assert "step train failed (run " in output
    parent = [r for r in runs_of(pipeline_store) if "mlflow.parentRunId" not in r.data.tags][-1]
    assert parent.info.status == "FAILED"
    assert leftover_containers() == []
