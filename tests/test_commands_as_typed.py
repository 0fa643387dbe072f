"""The getting-started page's commands (docs/getting-started.md, block `pipeline`), run in a shell exactly
as printed (tiny parameters added), from the state a user is in: the venv `make run` makes activated, and a
store that already holds an earlier run. Real MLflow store and registry, real step containers, real server
images and gRPC traffic; then the serving page's block (docs/serving.md, `serving`).

The commands come from the pages' marked blocks (tests/typed_blocks.py), so the docs and what is tested
cannot drift apart.
Each command's wall time goes to test-output/commands-as-typed.json. Order matters: the whole pipeline
runs first, and each step alone then works on what it left, as a user's would.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import docker
import kubernetes_validate
import pytest
import yaml

from sentclf.containers import CONTAINER_LABEL, PIPELINE_LABEL
from sentclf.contract import STEP_TAG
from sentclf.engine import containers_where
from sentclf.images import step_image

from .conftest import OUR_CHECKOUT, REPO_ROOT, TEST_OUTPUT, UNDER_CI, background_command, require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

STEPS = ("preprocess", "train", "building", "evaluate")
# The pipeline's tiny recipe: the later runs of the file give it again, cache on, to reuse its steps.
RECIPE = "-P epochs=1 -P max_train_samples=256 -P requests_per_level=50 -P latency_requests=200"
# What each command of the block gets added, so that it runs in seconds rather than minutes.
TINY = {
    "mlflow run .": f"{RECIPE} -P use_cache=false",
    "mlflow run preprocess": "-P label_audit=false",  # the pipeline above audits CoLA's labels already
    "mlflow run train": "-P max_train_samples=64 -P batch_size=16",
    "mlflow run building": "",
    "mlflow run evaluate": (
        "-P concurrency_levels=1,4 -P requests_per_level=50 -P latency_requests=200 "
        "-P bootstrap_resamples=1000"
    ),
    "mlflow ui": "",  # started by tests/test_ui_browser.py on a free port
}
TIMINGS: dict[str, float] = {}


def readme_commands() -> list[str]:
    """The lines of the getting-started page's as-typed block, comments stripped."""
    return list(typed_block("pipeline").lines)


def typed(prefix: str) -> str:
    """The page's command that starts with `prefix`, as printed."""
    return typed_block("pipeline").line(prefix)


def run_typed(
    store, prefix: str, tiny: str | None = None, timeout_s: float = 1800
) -> subprocess.CompletedProcess:
    """The page's command with the tiny parameters added (TINY's, or `tiny`), in a user's shell."""
    command = f"{typed(prefix)} {TINY[prefix] if tiny is None else tiny}".strip()
    started = time.monotonic()
    result = store.shell(command, timeout_s=timeout_s)
    TIMINGS[command] = round(time.monotonic() - started, 1)
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "commands-as-typed.json").write_text(json.dumps(TIMINGS, indent=2))
    return result


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-8000:]


def leftover_containers() -> list:
    """Server containers the steps started, and the step containers MLflow ran (`docker run --rm`)."""
    engine = docker.from_env()
    servers = containers_where(engine, label=[CONTAINER_LABEL, OUR_CHECKOUT])
    steps = containers_where(engine, ancestor=step_image(REPO_ROOT))
    return servers + steps


def test_the_docs_block_is_what_these_tests_run():
    commands = readme_commands()
    assert commands[0] == "source .venv/bin/activate"
    assert [next(p for p in TINY if c.startswith(p)) for c in commands[1:]] == list(TINY)


def test_the_pipeline_as_typed(typed_store):
    result = run_typed(typed_store, "mlflow run .")
    assert result.returncode == 0, output(result)

    client = typed_store.client
    runs = typed_store.runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # The run list tells pipelines apart: the name, and the headline as metrics (sentclf.schema).
    version, decision = parent.data.tags["registered_model_version"], parent.data.tags["gate.decision"]
    assert (
        parent.info.run_name
        == f"v{version} {decision} · cola · "
        + "epochs=1 max_train_samples=256 requests_per_level=50 latency_requests=200"
    )
    assert parent.data.metrics["registered_model_version"] == float(version)
    assert parent.data.metrics["gate_promoted"] == float(decision == "promoted")
    assert (
        parent.data.metrics["test_mcc_low"]
        < parent.data.metrics["test_mcc"]
        < parent.data.metrics["test_mcc_high"]
    )
    assert "preprocess -> train -> building -> evaluate" in parent.data.tags["mlflow.note.content"]
    experiment = client.get_experiment(typed_store.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = {
        r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == set(STEPS)
    assert [children[s].info.start_time for s in STEPS] == sorted(children[s].info.start_time for s in STEPS)
    for step, run in children.items():
        assert run.info.status == "FINISHED", step
        assert run.info.run_name == step
        assert run.data.tags.get("mlflow.project.env") == "docker", step
        assert any(a.path == "logs" for a in client.list_artifacts(run.info.run_id)), step
        assert parent.data.tags[f"cache.{step}"] == "ran"
        assert parent.data.tags[f"run_id.{step}"] == run.info.run_id

    preprocess = children["preprocess"]
    data = {a.path for a in client.list_artifacts(preprocess.info.run_id, "data")}
    assert data == {"data/train.parquet", "data/validation.parquet", "data/test.parquet"}
    assert preprocess.data.metrics["test_rows"] == 527

    train = children["train"]
    assert train.data.params["data_run_id"] == preprocess.info.run_id
    assert train.data.tags["input.data_run_id"] == preprocess.info.run_id
    assert train.data.params["max_train_samples"] == "256"
    assert {"train_loss", "val_accuracy", "val_mcc"} <= set(train.data.metrics)
    assert train.data.metrics["parity_max_abs_diff"] <= 1e-4
    version = train.data.tags["registered_model_version"]
    model_version = client.get_model_version("cola-classifier", version)
    assert "challenger" in model_version.aliases

    building = children["building"]
    image = building.data.tags["server_image"]
    assert re.fullmatch(rf"cola-classifier-server:{version}-[0-9a-f]{{12}}", image)
    labels = docker.from_env().images.get(image).labels
    # The registry and the image agree on what the image holds.
    assert client.get_model_version("cola-classifier", version).tags["server_image"] == image
    assert (labels["sentclf.model_name"], labels["sentclf.model_version"]) == ("cola-classifier", version)

    evaluate = children["evaluate"]
    metrics = evaluate.data.metrics
    for name in ("test_accuracy", "test_mcc", "latency_p50_ms", "latency_p99_ms", "throughput_rps"):
        assert name in metrics, name
    assert 0.5 < metrics["test_accuracy"] <= 1.0  # at least the majority class (~69%) after one tiny epoch
    assert parent.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert leftover_containers() == []
    # Nothing of the run is left in temp directories: MLflow's storage directory is pruned by the conductor.
    assert sorted(os.listdir(typed_store.env["TMPDIR"])) == []
    assert sorted(os.listdir(typed_store.env["MLFLOW_TMP_DIR"])) == []


def test_a_second_run_with_nothing_changed_reuses_every_step(typed_store):
    """The step cache: same code, parameters and data, whatever the commit or the tree's state."""
    first = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]
    result = run_typed(typed_store, "mlflow run .", RECIPE)  # cache on
    assert result.returncode == 0, output(result)
    second = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]
    assert second.info.run_id != first.info.run_id
    for step in STEPS:
        assert second.data.tags[f"cache.{step}"] == f"reused {first.data.tags[f'run_id.{step}']}", step
    assert second.data.tags["server_image"] == first.data.tags["server_image"]
    assert leftover_containers() == []


@contextlib.contextmanager
def edited(relative: str) -> Iterator[None]:
    """A comment appended to a file of the checkout for the length of the block, then its bytes back."""
    path = REPO_ROOT / relative
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit that changes no behaviour\n")
        yield
    finally:
        path.write_bytes(original)


def newest_parent(store):
    return [r for r in store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]


def test_a_conductor_edit_reruns_no_step_and_a_train_edit_reruns_from_train(typed_store):
    """Only what a step runs keys its cache: the conductor is not in the step image nor in any key."""
    first = newest_parent(typed_store)
    with edited("conductor/ui_links.py"):
        result = run_typed(typed_store, "mlflow run .", RECIPE)
    assert result.returncode == 0, output(result)
    second = newest_parent(typed_store)
    for step in STEPS:
        assert second.data.tags[f"cache.{step}"] == f"reused {first.data.tags[f'run_id.{step}']}", step

    with edited("train/train.py"):
        result = run_typed(typed_store, "mlflow run .", RECIPE)
    assert result.returncode == 0, output(result)
    third = newest_parent(typed_store)
    assert third.data.tags["cache.preprocess"] == f"reused {first.data.tags['run_id.preprocess']}"
    for step in ("train", "building", "evaluate"):
        assert third.data.tags[f"cache.{step}"] == "ran", step
    assert leftover_containers() == []


def test_a_failing_step_fails_the_pipeline_with_a_clear_message(typed_store):
    result = run_typed(typed_store, "mlflow run .", "-P epochs=0 -P max_train_samples=256")
    assert result.returncode != 0
    assert "epochs must be >= 1" in output(result)
    assert "step train failed (run " in output(result)
    parent = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]
    assert parent.info.status == "FAILED"
    assert leftover_containers() == []


@pytest.mark.skipif(bool(os.environ.get("CONDA_EXE")), reason="conda is installed: the bare command works")
def test_bare_mlflow_run_without_conda_fails_as_the_docs_say(typed_store):
    before = {r.info.run_id for r in typed_store.runs()}
    result = typed_store.shell("mlflow run . -P epochs=1", timeout_s=120)
    assert result.returncode != 0
    assert "Could not find Conda executable" in output(result)
    page = typed_block("pipeline").page.read_text()
    assert "--env-manager local" in page
    # MLflow created its run before it looked for conda: it stays RUNNING, as the page says, and the
    # page's remedy removes it (the later tests check that no pipeline is left RUNNING).
    (stuck,) = [r for r in typed_store.runs() if r.info.run_id not in before]
    assert stuck.info.status == "RUNNING"
    assert "mlflow runs delete --run-id <id>" in page
    removed = typed_store.shell(f"mlflow runs delete --run-id {stuck.info.run_id}", timeout_s=60)
    assert removed.returncode == 0, output(removed)
    assert stuck.info.run_id not in {r.info.run_id for r in typed_store.runs()}


def test_preprocess_alone(typed_store):
    result = run_typed(typed_store, "mlflow run preprocess")
    assert result.returncode == 0, output(result)
    run = typed_store.runs()[-1]
    assert (run.info.run_name, run.info.status) == ("preprocess", "FINISHED")


def test_train_alone_takes_the_newest_preprocess_run(typed_store):
    newest_preprocess = [r for r in typed_store.runs() if r.data.tags.get(STEP_TAG) == "preprocess"][-1]
    result = run_typed(typed_store, "mlflow run train")
    assert result.returncode == 0, output(result)
    run = typed_store.runs()[-1]
    assert (run.info.run_name, run.info.status) == ("train", "FINISHED")
    assert run.data.params["data_run_id"] in ("", "''")  # MLflow logged the default (shell-quoted)
    assert run.data.tags["input.data_run_id"] == newest_preprocess.info.run_id
    assert run.data.params["epochs"] == "5"
    version = run.data.tags["registered_model_version"]
    assert "challenger" in typed_store.client.get_model_version("cola-classifier", version).aliases


def test_building_alone_builds_the_challenger_and_reaches_its_server(typed_store):
    challenger = typed_store.client.get_model_version_by_alias("cola-classifier", "challenger").version
    result = run_typed(typed_store, "mlflow run building")
    assert result.returncode == 0, output(result)
    run = typed_store.runs()[-1]
    assert run.data.tags["server_image"].startswith(f"cola-classifier-server:{challenger}-")
    assert "smoke test passed" in output(result)  # over gRPC, from a step on Docker's default network
    assert leftover_containers() == []


def test_evaluate_alone_finds_the_versions_image_and_data(typed_store):
    version_1 = typed_store.client.get_model_version("cola-classifier", "1")
    result = run_typed(typed_store, "mlflow run evaluate")
    assert result.returncode == 0, output(result)
    run = typed_store.runs()[-1]
    assert run.data.tags["input.model_version"] == "1"
    assert run.data.tags["input.server_image"] == version_1.tags["server_image"]
    pipeline_preprocess = typed_store.client.get_run(version_1.run_id).data.tags["input.data_run_id"]
    assert run.data.tags["input.data_run_id"] == pipeline_preprocess  # its own lineage, not the newest
    assert leftover_containers() == []


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


@contextlib.contextmanager
def make_serve_in_foreground(env: dict[str, str], command: str) -> Iterator[list[str]]:
    """`command` (make serve ...) in a user's shell, held as a second terminal holds it: entered once it has
    printed its ports and answers ready; Ctrl-C (SIGINT to the process group, as a terminal sends it) on
    leaving. Yields its output lines so far; the rest is appended after the Ctrl-C."""
    process = background_command(command, env)
    seen: list[str] = []
    try:
        wait_for_line(process, "Ctrl-C stops and removes it", seen, timeout_s=300)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://127.0.0.1:8000/v2/health/ready",
                ],
                capture_output=True,
                text=True,
            )
            if ready.stdout == "200":
                break
            time.sleep(0.5)
        yield seen
    finally:
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        seen.append(rest)


def _serve_until_sigint(store, command: str, curl: str) -> tuple[str, str]:
    """`command` (make serve ...) in the foreground, the page's curl as typed against it; its output."""
    with make_serve_in_foreground(store.env, command) as seen:
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=True)
    return answer.stdout, "".join(seen)


def test_serving_as_typed(typed_store, tmp_path):
    """make serve (the champion, then a version), the page's curl against it, Ctrl-C, nothing left; and
    the serving manifests command as printed, its output valid."""
    commands = list(typed_block("serving").lines)
    assert [c.split()[0] for c in commands] == [
        "make",
        "make",
        "curl",
        "SENTCLF_REGISTRY=registry.example.com/sentclf",
        "kubectl",
    ]
    if not _ports_free(8000, 8001, 8002):
        message = "ports 8000-8002 are taken on this machine; make serve uses them as printed"
        if UNDER_CI:  # a CI machine is ours: something left there is a failure, never a skip
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    client = typed_store.client
    if not any(v.aliases for v in client.search_model_versions("name='cola-classifier'")):
        # The state after a promotion (the tiny pipeline's model may not pass the gate).
        client.set_registered_model_alias("cola-classifier", "champion", "1")
    engine = docker.from_env()
    for command in commands[:2]:
        answer, log = _serve_until_sigint(typed_store, command, commands[2])
        body = json.loads(answer)
        assert [o["name"] for o in body["outputs"]] == ["label", "probabilities", "label_name"], body
        assert "HTTP     http://127.0.0.1:8000" in log and "gRPC     127.0.0.1:8001" in log, log
        assert "/v2/models/cola/infer)" in log, log  # the name the image answers to, as the curl uses it
        assert "removed sentclf-serve-" in log, log
        assert containers_where(engine, label=["sentclf.serve", OUR_CHECKOUT]) == []
    # The serving page's manifests command, then kubernetes/README.md's (the same one, and one with
    # --memory-mb).
    kube_commands = list(typed_block("serving-manifests").lines)
    assert [c.split()[0] for c in kube_commands] == [commands[3].split()[0]] * 2 + ["kubectl"]
    assert kube_commands[0] == commands[3] and kube_commands[2] == commands[4]
    memory = []
    for command in (commands[3], kube_commands[1]):
        manifests = REPO_ROOT / "serving.yaml"
        try:
            result = typed_store.shell(command)
            assert result.returncode == 0, output(result)
            docs = list(yaml.safe_load_all(manifests.read_text()))
        finally:
            manifests.unlink(missing_ok=True)
        assert [d["kind"] for d in docs] == [
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "InferenceService",
        ]
        for doc in docs[:3]:
            kubernetes_validate.validate(doc, "1.37.0", strict=True)
        (container,) = docs[0]["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith("registry.example.com/sentclf/cola-classifier-server:")
        memory.append(container["resources"]["requests"]["memory"])
    assert memory[1] == "464Mi"  # --memory-mb 300: x 1.5, to 16 MiB


def test_a_server_killed_during_evaluation_fails_the_step_and_moves_nothing(typed_store):
    """`docker kill` the server in the middle of the load: the step fails naming the container, the
    server's log is an artifact of the failed run, no alias moves, and no container is left."""
    client = typed_store.client
    aliases_before = {
        v.version: sorted(v.aliases) for v in client.search_model_versions("name='cola-classifier'")
    }
    command = f"{typed('mlflow run evaluate')} -P concurrency_levels=1,4 -P requests_per_level=20000"
    process = subprocess.Popen(
        ["bash", "-c", f"source .venv/bin/activate && exec {command}"],
        cwd=REPO_ROOT, env=typed_store.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        wait_for_line(process, "SERVING after", seen)
        time.sleep(4)  # into the measurements
        servers = containers_where(stopped=False, label=[CONTAINER_LABEL, OUR_CHECKOUT])
        assert len(servers) == 1
        killed = servers[0].name
        servers[0].kill()
        log = "".join(seen) + process.communicate(timeout=300)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert killed in log and "exited" in log and "Nothing was promoted" in log, log[-6000:]
    run = typed_store.runs()[-1]
    assert (run.info.run_name, run.info.status) == ("evaluate", "FAILED")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "server")} == {"server/server.log"}
    aliases_after = {
        v.version: sorted(v.aliases) for v in client.search_model_versions("name='cola-classifier'")
    }
    assert aliases_after == aliases_before
    assert leftover_containers() == []


def wait_for_line(process: subprocess.Popen, marker: str, seen: list[str], timeout_s: float = 600) -> None:
    """Read the process's output until a line contains `marker` (kept in `seen`)."""
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout_s}s"
    raise AssertionError(f"the process ended before {marker!r}:\n{''.join(seen[-40:])}")


def versions(store) -> int:
    return len(store.client.search_model_versions("name = 'cola-classifier'"))


@pytest.mark.parametrize(
    ("prefix", "extra", "sig"),
    [
        (
            "mlflow run .",
            "-P epochs=3 -P max_train_samples=512 -P use_cache=false -P label_audit=false",
            signal.SIGTERM,
        ),
        ("mlflow run train", "-P max_train_samples=512", signal.SIGINT),
    ],
    ids=["pipeline-sigterm-to-group", "train-alone-ctrl-c"],
)
def test_a_cancel_stops_the_step_and_leaves_nothing(typed_store, prefix, extra, sig):
    require_docker()
    before = versions(typed_store)
    command = f"{typed(prefix)} {extra}"
    process = typed_store.background(command)
    seen: list[str] = []
    try:
        wait_for_line(process, "INFO train: training on", seen)  # inside the training loop
        cancelled = time.monotonic()
        os.killpg(process.pid, sig)
        process.wait(timeout=120)
        while leftover_containers():
            assert time.monotonic() - cancelled < 30, f"containers left: {leftover_containers()}"
            time.sleep(0.2)
        seconds = time.monotonic() - cancelled
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log = "".join(seen) + process.stdout.read()
    TIMINGS[f"cancel ({sig.name}) of `{command}`: seconds until no container is left"] = round(seconds, 1)
    (TEST_OUTPUT / "commands-as-typed.json").write_text(json.dumps(TIMINGS, indent=2))
    assert process.returncode != 0, log[-3000:]
    train = [r for r in typed_store.runs() if r.data.tags.get(STEP_TAG) == "train"][-1]
    assert train.info.status in ("KILLED", "FAILED"), log[-3000:]
    time.sleep(5)  # long enough for a stray container to have registered a version
    assert versions(typed_store) == before
    assert leftover_containers() == []
    engine = docker.from_env()
    assert containers_where(engine, label=PIPELINE_LABEL) == []
