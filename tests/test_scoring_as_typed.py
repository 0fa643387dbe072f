"""The README's "Scoring many sentences" commands, run in a shell exactly as printed, against the champion
of the as-typed store (the tiny pipeline of tests/test_commands_as_typed.py when it ran first in this
session; a tiny registered text model otherwise): `mlflow models predict`, `mlflow models serve` answered by
the README's curl, and `mlflow run score` on local[*] and on a standalone Spark cluster of one master and
two workers (one shared cluster for the module, always removed). Every answer's labels must be those of
ONNX Runtime in this process on the same version's files.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sentclf.containers import CONTAINER_LABEL
from sentclf.engine import docker_client
from sentclf.spark_cluster import standalone_cluster
from sentclf.text_model import TextClassifier

from .conftest import OUR_CHECKOUT, README, REPO_ROOT, TEST_OUTPUT, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

MODEL = "cola-classifier"
ROWS = 120
TIMINGS: dict[str, float] = {}


def scoring_commands() -> list[str]:
    """The lines of the README's scoring block, comments stripped."""
    text = README.read_text()
    block = text[text.index("<!-- scoring-as-typed") :]
    body = block[block.index("```bash") + len("```bash") : block.index("```", block.index("```bash") + 7)]
    return [line.split("  #")[0].strip() for line in body.strip().splitlines() if line.strip()]


def typed(prefix: str) -> str:
    matches = [c for c in scoring_commands() if c.startswith(prefix)]
    assert len(matches) == 1, f"the README's scoring block has {matches} for {prefix!r}"
    return matches[0]


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-8000:]


def timed(store, command: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = store.shell(command, timeout_s=timeout_s)
    TIMINGS[command] = round(time.monotonic() - started, 1)
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "scoring-as-typed.json").write_text(json.dumps(TIMINGS, indent=2))
    return result


def cola_sentences(rows: int) -> list[str]:
    frame = pd.read_csv(
        REPO_ROOT / "preprocess" / "data" / "cola" / "in_domain_dev.tsv",
        sep="\t", header=None, quoting=3, dtype=str, keep_default_na=False,
    )  # fmt: skip
    return frame[3].tolist()[:rows]


@pytest.fixture(scope="module")
def champion(typed_store, tmp_path_factory) -> str:
    """The champion's version: the tiny pipeline's (promoted, or set as the serving test does), or a tiny
    registered text model when this module runs alone."""
    client = typed_store.client
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        return str(client.get_model_version_by_alias(MODEL, "champion").version)
    versions = client.search_model_versions(f"name='{MODEL}'") if client.search_registered_models() else []
    if not versions:
        from tests.unit.test_text_model import text_model_files

        from pyfunc_model import log_text_model

        mlflow.set_tracking_uri(typed_store.uri)
        try:
            with mlflow.start_run(experiment_id=typed_store.experiment_id):
                files = text_model_files(tmp_path_factory.mktemp("tiny-text-model"))
                version = str(log_text_model(*files, registered_model_name=MODEL).registered_model_version)
        finally:
            mlflow.set_tracking_uri(None)
    else:
        version = str(max(int(v.version) for v in versions))
    client.set_registered_model_alias(MODEL, "champion", version)
    return version


@pytest.fixture(scope="module")
def reference(typed_store, champion, tmp_path_factory) -> dict[str, int]:
    """sentence -> class, by ONNX Runtime in this process on the champion's files."""
    mlflow.set_tracking_uri(typed_store.uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/{champion}", dst_path=str(tmp_path_factory.mktemp("champion"))
        )
    finally:
        mlflow.set_tracking_uri(None)
    texts = cola_sentences(ROWS)
    return dict(zip(texts, TextClassifier.from_dir(local).score(texts).labels.tolist(), strict=False))


@pytest.fixture(scope="module")
def sentences_csv(reference) -> Path:
    """sentences.csv in the repository root, where the README's commands read it (removed afterwards)."""
    path = REPO_ROOT / "sentences.csv"
    pd.DataFrame({"text": cola_sentences(ROWS)}).to_csv(path, index=False)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def score_image():
    require_docker()
    from conductor.step_image import ensure_score_image

    return ensure_score_image(docker_client(), REPO_ROOT)


@pytest.fixture(scope="module")
def spark_cluster(score_image):
    """One master and two workers (one core each) from the score image's pyspark, on 127.0.0.1:7077 as
    the README prints it when that port is free."""
    with socket.socket() as probe:
        port = 7077 if probe.connect_ex(("127.0.0.1", 7077)) != 0 else 0
    with standalone_cluster(workers=2, cores_per_worker=1, image=score_image, port=port) as cluster:
        yield cluster
    engine = docker_client()
    assert engine.containers.list(all=True, filters={"label": f"sentclf.spark-cluster={cluster.name}"}) == []


def test_the_readme_block_is_what_these_tests_run():
    assert [c.split()[:3] for c in scoring_commands()] == [
        ["mlflow", "models", "predict"],
        ["mlflow", "models", "serve"],
        ["curl", "-s", "http://127.0.0.1:5001/invocations"],
        ["mlflow", "run", "score"],
        ["mlflow", "run", "score"],
    ]


def test_the_champion_predicts_sentences_in_process(typed_store, champion, reference):
    """The Python API as the README shows it: a list of sentences, and a frame with a text column."""
    mlflow.set_tracking_uri(typed_store.uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    texts = list(reference)
    from_list = model.predict(texts)
    assert from_list["class"].tolist() == list(reference.values())
    assert model.predict(pd.DataFrame({"text": texts}))["class"].tolist() == list(reference.values())


def test_mlflow_models_predict_as_typed(typed_store, sentences_csv, reference):
    result = timed(typed_store, typed("mlflow models predict"))
    assert result.returncode == 0, output(result)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    predictions = answer["predictions"]
    assert [p["class"] for p in predictions] == list(reference.values())
    assert {"class", "name", "probabilities"} == set(predictions[0])


def test_mlflow_models_serve_as_typed_answers_the_readme_curl(typed_store, champion, reference):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5001)) == 0:
            pytest.skip("port 5001 is taken on this machine; the README's command uses it as printed")
    process = subprocess.Popen(
        ["bash", "-c", f"source .venv/bin/activate && exec {typed('mlflow models serve')}"],
        cwd=REPO_ROOT, env=typed_store.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    started = time.monotonic()
    try:
        while time.monotonic() - started < 180:
            ping = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:5001/ping"],
                capture_output=True, text=True,
            )  # fmt: skip
            if ping.stdout == "200":
                break
            assert process.poll() is None, process.stdout.read()[-4000:]
            time.sleep(1)
        TIMINGS["mlflow models serve: seconds until /ping answers"] = round(time.monotonic() - started, 1)
        curl = typed("curl")
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=True)
        predictions = json.loads(answer.stdout)["predictions"]
        sentences = json.loads(re.search(r"-d '(.*)'$", curl).group(1))["inputs"]
        mlflow.set_tracking_uri(typed_store.uri)
        try:
            expected = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(sentences)
        finally:
            mlflow.set_tracking_uri(None)
        assert [p["class"] for p in predictions] == expected["class"].tolist()
        assert [p["name"] for p in predictions] == expected["name"].tolist()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    # MLflow's server hands the port to worker processes of the same group, which exit just after it.
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 5001)) != 0:
                break
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the server outlived Ctrl-C by 20 s")
        time.sleep(0.5)


def score_output(folder: str) -> pd.DataFrame:
    return pq.read_table(REPO_ROOT / folder / "scores.parquet").to_pandas()


def newest_score_run(store):
    return [r for r in store.runs() if r.data.tags.get("sentclf.step") == "score"][-1]


def assert_scored_like(reference: dict[str, int], scored: pd.DataFrame) -> None:
    assert list(scored.columns) == ["text", "class", "name", "probabilities"]
    assert len(scored) == len(reference)
    assert dict(zip(scored["text"], scored["class"].tolist(), strict=True)) == reference
    assert scored["text"].tolist() == list(reference)  # in the input's order
    assert all(abs(sum(p) - 1) < 1e-4 for p in scored["probabilities"])


def test_mlflow_run_score_on_local_spark_as_typed(typed_store, score_image, sentences_csv, reference):
    (command,) = [
        c for c in scoring_commands() if c.startswith("mlflow run score") and "spark_master" not in c
    ]
    folder = re.search(r"-P output=(\S+)", command).group(1)
    try:
        result = timed(typed_store, command)
        assert result.returncode == 0, output(result)
        assert_scored_like(reference, score_output(folder))
    finally:
        shutil.rmtree(REPO_ROOT / folder, ignore_errors=True)
    run = newest_score_run(typed_store)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["rows"] == ROWS and metrics["sentences_per_second"] > 0 and metrics["executors"] == 1
    assert run.data.params["spark_master"] in ("local[*]", "'local[*]'")  # MLflow logs it shell-quoted
    artifacts = {a.path for a in typed_store.client.list_artifacts(run.info.run_id, "score")}
    assert {"score/sample.json", "score/rows_per_file.json"} <= artifacts
    assert docker_client().containers.list(all=True, filters={"label": [CONTAINER_LABEL, OUR_CHECKOUT]}) == []


def test_mlflow_run_score_on_a_two_worker_cluster_as_typed(
    typed_store, spark_cluster, sentences_csv, reference
):
    command = typed("mlflow run score -P input=sentences.csv -P output=scores-cluster")
    assert "-P spark_master=spark://127.0.0.1:7077 -A network=host" in command
    command = command.replace("spark://127.0.0.1:7077", spark_cluster.master_url)  # when 7077 was taken
    folder = re.search(r"-P output=(\S+)", command).group(1)
    try:
        result = timed(typed_store, command)
        assert result.returncode == 0, output(result)
        assert_scored_like(reference, score_output(folder))
    finally:
        shutil.rmtree(REPO_ROOT / folder, ignore_errors=True)
    run = newest_score_run(typed_store)
    assert run.data.metrics["executors"] == 2 and run.data.metrics["task_slots"] == 2
