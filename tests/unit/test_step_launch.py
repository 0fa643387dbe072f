"""How the conductor launches a step (conductor.local_backend): through MLflow's projects API, with the
step's own `docker run` as the process it waits on. So a container killed from outside is told apart from a
step that failed (the nightly loop retries the one, not the other), and no run stays RUNNING after its
container is gone. Real engine, real MLflow store; the step is a shell command in the base image."""

import threading
import time

import mlflow
import pytest

from conductor.local_backend import DIRECT_BACKEND, LocalBackend, StepFailed, require_direct_backend
from conductor.outcome import CONTAINER_KILLED, STEP_FAILED
from sentclf.containers import PIPELINE_LABEL
from sentclf.engine import containers_where
from sentclf.images import LOCAL_BASE_IMAGE

pytestmark = pytest.mark.docker


def project_with_step(root, command: str):
    """A project whose one step, `sleeper`, runs `command` in the base image."""
    (root / "sleeper").mkdir()
    (root / "sleeper" / "MLproject").write_text(
        f"name: sleeper\ndocker_env:\n  image: {LOCAL_BASE_IMAGE}\n"
        f"entry_points:\n  main:\n    command: \"sh -c '{command}'\"\n"
    )
    return root


def step_container(client, pipeline_run_id: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := containers_where(client, stopped=False, label=f"{PIPELINE_LABEL}={pipeline_run_id}"):
            return found[0]
        time.sleep(0.1)
    raise AssertionError("the step's container never started")


def test_the_backend_is_registered_with_mlflow():
    require_direct_backend()  # raises with the fix (`make venv`) where the venv predates it
    from mlflow.projects.backend import loader

    assert type(loader.load_backend(DIRECT_BACKEND)).__name__ == "DirectDockerBackend"


@pytest.mark.parametrize(("how", "signal_exit"), [("kill", 137), ("stop", 143)])
def test_a_container_killed_from_outside_is_told_from_a_failing_step(
    tracking_store, tmp_path, engine, how, signal_exit
):
    backend = LocalBackend(project_with_step(tmp_path, "sleep 120"), "launch-test-kill")
    container: list = []

    def kill_it() -> None:
        container.append(step_container(engine, "launch-test-kill"))
        getattr(container[0], how)(**({"timeout": 1} if how == "stop" else {}))

    killer = threading.Thread(target=kill_it)
    killer.start()
    with pytest.raises(StepFailed) as failed:
        backend.run_step("sleeper", {}, run_name="sleeper")
    killer.join()
    assert failed.value.kind == CONTAINER_KILLED and failed.value.step == "sleeper"
    assert "was killed from outside" in str(failed.value) and f"exit {signal_exit}" in str(failed.value)
    (run,) = mlflow.search_runs(output_format="list")
    assert run.info.status == "FAILED"  # the container never ended it; the conductor did


def test_a_failing_step_fails_with_its_exit_status_and_its_run_ends(tracking_store, tmp_path, engine):
    backend = LocalBackend(project_with_step(tmp_path, "exit 3"), "launch-test-fail")
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        backend.run_step("sleeper", {}, run_name="sleeper")
    assert failed.value.kind == STEP_FAILED and "failed (run" in str(failed.value)
    assert "exit 3" in str(failed.value) and "mlflow artifacts download" in str(failed.value)
    (run,) = mlflow.search_runs(output_format="list")
    assert run.info.status == "FAILED" and run.info.run_name == "sleeper"
    # No second `mlflow run` process (4-5 s of imports on this machine) stands before the container.
    assert time.monotonic() - started < 15


def test_a_step_that_exits_0_without_ending_its_run_ends_it_finished_as_mlflow_does(
    tracking_store, tmp_path, engine
):
    backend = LocalBackend(project_with_step(tmp_path, "true"), "launch-test-true")
    run = backend.run_step("sleeper", {}, run_name="sleeper")
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.backend"] == DIRECT_BACKEND
