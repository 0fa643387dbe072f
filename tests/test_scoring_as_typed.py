"""The scoring page's commands (docs/serving.md, blocks `scoring` and `spark-cluster`), run in a shell
exactly as printed, in the venv `make run` makes, against the champion of the as-typed store (the tiny
pipeline of tests/test_commands_as_typed.py when it ran first in this session; a tiny registered text model
otherwise): the line that writes sentences.csv, `mlflow models predict`, `mlflow models serve` answered by
the page's curl, `make score-image`, and `mlflow run score` on local[*] and on the standalone Spark cluster
`make spark-cluster` starts (one master and two workers, for the module, always removed). Every answer's
labels must be those of ONNX Runtime in this process on the same version's files.
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

from sentclf.containers import CONTAINER_LABEL, free_port
from sentclf.engine import containers_where, docker_client
from sentclf.images import score_image as checkout_score_image
from sentclf.spark_cluster import CLUSTER_LABEL
from sentclf.text_model import TextClassifier

from .conftest import OUR_CHECKOUT, REPO_ROOT, TEST_OUTPUT, require_docker
from .test_commands_as_typed import wait_for_line
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

MODEL = "cola-classifier"
ROWS = 527  # what the page's first line writes: CoLA's held-out in-domain sentences
TIMINGS: dict[str, float] = {}


def typed(prefix: str) -> str:
    return typed_block("scoring").line(prefix)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-8000:]


def timed(store, command: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = store.shell(command, timeout_s=timeout_s)
    TIMINGS[command] = round(time.monotonic() - started, 1)
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "scoring-as-typed.json").write_text(json.dumps(TIMINGS, indent=2))
    return result


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
def sentences_csv(typed_store) -> Path:
    """sentences.csv in the repository root, written by the page's own line (removed afterwards)."""
    path = REPO_ROOT / "sentences.csv"
    result = typed_store.shell(typed("python -c"), timeout_s=120)
    assert result.returncode == 0, output(result)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def reference(typed_store, champion, sentences_csv, tmp_path_factory) -> dict[str, int]:
    """sentence -> class, by ONNX Runtime in this process on the champion's files."""
    mlflow.set_tracking_uri(typed_store.uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/{champion}", dst_path=str(tmp_path_factory.mktemp("champion"))
        )
    finally:
        mlflow.set_tracking_uri(None)
    texts = pd.read_csv(sentences_csv)["text"].tolist()
    assert len(texts) == ROWS  # CoLA's held-out in-domain sentences, no two alike
    return dict(zip(texts, TextClassifier.from_dir(local).score(texts).labels.tolist(), strict=False))


@pytest.fixture(scope="module")
def score_image(typed_store) -> str:
    """`make score-image` as printed: the score image exists afterwards."""
    require_docker()
    result = timed(typed_store, typed("make score-image"), timeout_s=1800)
    assert result.returncode == 0, output(result)
    docker_client().images.get(checkout_score_image())  # this checkout's
    return checkout_score_image()


@pytest.fixture(scope="module")
def spark_cluster(typed_store, score_image) -> str:
    """`make spark-cluster` as printed, in the foreground as a second terminal holds it (SPARK_PORT added
    only when 7077 is taken here); its master URL. Ctrl-C afterwards, and nothing of it is left."""
    command = typed_block("spark-cluster").line("make spark-cluster")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 7077)) == 0:
            command += f" SPARK_PORT={free_port()}"
    process = typed_store.background(command)
    seen: list[str] = []
    try:
        wait_for_line(process, "Ctrl-C stops and removes them", seen, timeout_s=600)
        master = re.search(r"Spark master (spark://\S+)", "".join(seen)).group(1)
        yield master
    finally:
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    assert "removed sentclf-spark-" in rest, "".join(seen) + rest
    engine = docker_client()
    assert containers_where(engine, label=[CLUSTER_LABEL, OUR_CHECKOUT]) == []


def test_the_docs_blocks_are_what_these_tests_run():
    assert [c.split()[:3] for c in typed_block("scoring").lines] == [
        ["python", "-c", '"import'],
        ["mlflow", "models", "predict"],
        ["mlflow", "models", "serve"],
        ["curl", "-s", "http://127.0.0.1:5001/invocations"],
        ["make", "score-image"],
        ["mlflow", "run", "score"],
    ]
    assert [c.split()[:3] for c in typed_block("spark-cluster").lines] == [
        ["make", "spark-cluster"],
        ["mlflow", "run", "score"],
    ]


def test_the_champion_predicts_sentences_in_process(typed_store, champion, reference):
    """The Python API as docs/serving.md shows it: a list of sentences, and a frame with a text column."""
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
            pytest.skip("port 5001 is taken on this machine; the page's command uses it as printed")
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
    command = typed("mlflow run score")
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
    assert containers_where(label=[CONTAINER_LABEL, OUR_CHECKOUT]) == []


def test_mlflow_run_score_on_a_two_worker_cluster_as_typed(
    typed_store, spark_cluster, sentences_csv, reference
):
    command = typed_block("spark-cluster").line("mlflow run score")
    assert "-P spark_master=spark://127.0.0.1:7077 -A network=host" in command
    command = command.replace("spark://127.0.0.1:7077", spark_cluster)  # when 7077 was taken
    folder = re.search(r"-P output=(\S+)", command).group(1)
    try:
        result = timed(typed_store, command)
        assert result.returncode == 0, output(result)
        assert_scored_like(reference, score_output(folder))
    finally:
        shutil.rmtree(REPO_ROOT / folder, ignore_errors=True)
    run = newest_score_run(typed_store)
    assert run.data.metrics["executors"] == 2 and run.data.metrics["task_slots"] == 2
