"""Shared fixtures: a throw-away MLflow tracking store, and access to each step's own modules."""

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from sentclf.images import CHECKOUT_LABEL, LOCAL_BASE_IMAGE, checkout_filter

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
UNDER_CI = os.environ.get("CI", "").lower() == "true"
# This checkout's label on what its steps build and start (sentclf.images): leftover checks count only
# their own, so two clones on one machine can run their tests side by side.
OUR_CHECKOUT = checkout_filter(REPO_ROOT)


# The as-typed store is shared by the session: tests/test_commands_as_typed.py's `mlflow run .` makes its
# first pipeline and asserts on what the store then holds (one parent run, the newest parent), and the
# analysis module reuses that finished run and then adds runs of its own. So the first runs first, the
# second last.
FIRST_MODULES = ("test_commands_as_typed.py",)
LAST_MODULES = ("test_analysis_e2e.py",)


# `make test` runs two pytest-xdist workers (--dist loadscope, with the scopes `test_group` names). Everything
# that uses the Docker engine, the fixed ports the docs print, the crontab or its own wall time is one
# scope, run in one worker in the order above, as the whole suite ran before: its leftover checks look at
# this checkout's containers and images, and a test of it never shares them. The unit tests, one scope per
# module (their module fixtures made once), go to the other worker, which runs at idle priority
# (`worker_idles`): it takes only the CPU the end-to-end tests leave, and it finishes while they run.
# (Not xdist's loadgroup: under pytest 9.2 its xdist_group marks no longer reach the scheduler.)
ENGINE_GROUP = "engine"
UNIT_TESTS = "tests/unit/"
ENGINE_MARKS = ("pytest.mark.docker", "pytest.mark.timed")


@functools.cache
def test_group(module: str) -> str:
    """The scope of a test module (its path from the repository root): ENGINE_GROUP, or the module itself
    for a unit module none of whose tests is marked `docker` or `timed`."""
    if not module.startswith(UNIT_TESTS):
        return ENGINE_GROUP
    text = (REPO_ROOT / module).read_text()
    return ENGINE_GROUP if any(mark in text for mark in ENGINE_MARKS) else module


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadscope over `test_group`'s scopes (the controller sees test ids only, not marks)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TestGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid.split("::", 1)[0])

    return TestGroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: (item.path.name not in FIRST_MODULES) + (item.path.name in LAST_MODULES))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if hasattr(item.config, "workerinput"):
        worker_idles(test_group(item.path.relative_to(REPO_ROOT).as_posix()) != ENGINE_GROUP)


# The unit worker's cpu cgroup, where it may make one (root), weighs 1/16 of a default one, so that the
# containers' cgroups take the CPU first. SCHED_IDLE alone is not enough: the containers' threads are in
# cgroups of their own, and an idle-policy process beside them slowed a container's torch matmuls 2.4x (a
# host process's not at all); from a cgroup of cpu.shares=64, 3%. Not cpu.idle: a weight, however small,
# keeps the unit tests' own timeouts from starving while a pipeline trains on both cores.
IDLE_CGROUP = "sentclf-unit-tests"
_idle: list[bool] = [False]


def cpu_cgroup() -> tuple[Path, str] | None:
    """The cpu controller's hierarchy and this process's cgroup in it: cgroup v1's cpu mount, else v2's."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            for mount in (Path("/sys/fs/cgroup") / controllers, Path("/sys/fs/cgroup/cpu")):
                if (mount / "cpu.shares").exists():
                    return mount, path
    unified = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError):
        if "cpu" in (unified / "cgroup.controllers").read_text().split():
            return unified, next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    return None


HOME_CGROUP = cpu_cgroup()


def worker_idles(idle: bool) -> None:
    """The unit tests' worker process, its threads and what it starts: SCHED_IDLE and in the idle cgroup;
    the engine group, in whichever worker it lands, at the normal policy in the process's own cgroup.
    Threads started later inherit the policy of the thread that starts them; children, the cgroup."""
    if _idle[0] == idle:
        return
    _idle[0] = idle
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that has just ended; back to normal unprivileged
            os.sched_setscheduler(int(task.name), policy, os.sched_param(0))
    if HOME_CGROUP is None:
        return
    mount, home = HOME_CGROUP
    target = mount / IDLE_CGROUP if idle else mount / home.lstrip("/")
    with contextlib.suppress(OSError):  # not root, or no such cgroup controls: the policy alone
        if idle:
            target.mkdir(exist_ok=True)
            for name, value in (("cpu.shares", "64"), ("cpu.weight", "6")):  # v1's of 1024, v2's of 100
                if (target / name).exists():
                    (target / name).write_text(value)
                    break
        (target / "cgroup.procs").write_text(str(os.getpid()))


def ours(labels: dict | None) -> bool:
    """Not another checkout's: a container or image with this checkout's label, or with none (a build's)."""
    other = (labels or {}).get(CHECKOUT_LABEL)
    return other is None or f"{CHECKOUT_LABEL}={other}" == OUR_CHECKOUT


# Whatever the libraries under test leave in the temp dir (MLflow's sqlite init locks, Chromium's singleton
# directory, torch's inductor cache) goes into one directory of this session, removed when it ends: set
# before any of them is imported, inherited by every subprocess a test starts.
# pytest's own tmp_path directories stay where pytest keeps them (its last three sessions, to inspect).
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
SESSION_TMP = Path(tempfile.mkdtemp(prefix="sentclf-tests-"))
os.environ["TMPDIR"] = str(SESSION_TMP)
tempfile.tempdir = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_TMP, ignore_errors=True)
    if HOME_CGROUP and not hasattr(session.config, "workerinput"):  # the workers have ended: empty
        with contextlib.suppress(OSError):
            (HOME_CGROUP[0] / IDLE_CGROUP).rmdir()


# Each step imports its modules by bare name from its own directory, as it does when it runs.
for step in ("preprocess", "train", "building", "evaluate"):
    sys.path.insert(0, str(REPO_ROOT / step))


def docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def require_docker() -> None:
    """Skip without an engine on a laptop; under CI a missing engine is a failure, never a skip."""
    if docker_available():
        return
    if UNDER_CI:
        pytest.fail("CI=true but no Docker engine answers: .ci/run must install and start one")
    pytest.skip("no Docker engine answers")


@pytest.fixture
def engine():
    """A client of the engine, which holds the local base image small containers are started from."""
    require_docker()
    import docker

    client = docker.from_env()
    if not client.images.list(name=LOCAL_BASE_IMAGE):
        pytest.fail(f"{LOCAL_BASE_IMAGE} is missing: `make base-image` builds it")
    return client


@pytest.fixture(autouse=True)
def hub_offline_as_it_was():
    """Code that resolves the bundled backbone in this process sets HF_HUB_OFFLINE=1 (sentclf.backbone, as
    a step does in its own process): put it back after each test, so that no later test (the hub's offline
    messages) depends on which tests ran before it."""
    before = os.environ.get("HF_HUB_OFFLINE")
    yield
    if before is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = before


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory) -> Path:
    """An empty sqlite store as MLflow creates it, made once: MLflow builds and migrates a new store's
    tables in about 2 s, and some 80 tests each start from an empty one (a copy of this file)."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_store(tmp_path, monkeypatch, empty_store_file):
    """A fresh sqlite tracking store and an experiment whose artifacts live under tmp_path."""
    shutil.copyfile(empty_store_file, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("test", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_experiment(experiment_id=experiment_id)
    yield experiment_id
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    shutil.rmtree(tmp_path / "artifacts", ignore_errors=True)


# ---- the commands as a user types them -------------------------------------------------------------------
# What a session leaves to look at (timings, screenshots); a pytest run inside a test names one of its own.
TEST_OUTPUT = Path(os.environ.get("SENTCLF_TEST_OUTPUT") or REPO_ROOT / "test-output")


@dataclass
class TypedStore:
    """A tracking store and experiment of their own, and the environment of a user's shell after
    `source .venv/bin/activate` pointed at them (the activate script keeps variables already set)."""

    uri: str
    experiment: str
    experiment_id: str
    root: Path
    env: dict[str, str]

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.uri)

    def shell(
        self, command: str, timeout_s: float = 1800, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """`command` as venv_shell runs it, in this store's environment unless `env` is given."""
        return venv_shell(command, env or self.env, timeout_s)

    def background(self, command: str) -> subprocess.Popen:
        """`command` in this store's environment, as background_command starts it; the caller stops it."""
        return background_command(command, self.env)

    def runs(self) -> list:
        return self.client.search_runs([self.experiment_id], order_by=["attributes.start_time ASC"])


def pytest_sessionstart(session) -> None:
    """Each session's shell-seconds.jsonl is its own (started afresh by the session, not by each worker)."""
    if not hasattr(session.config, "workerinput"):
        (TEST_OUTPUT / "shell-seconds.jsonl").unlink(missing_ok=True)


def venv_shell(command: str, env: dict[str, str], timeout_s: float = 1800) -> subprocess.CompletedProcess:
    """`command` in bash from the repository root with the venv `make run` makes activated, as a user runs
    it. Its wall time goes to test-output/shell-seconds.jsonl (where the suite's minutes go, command by
    command)."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", f"source .venv/bin/activate && {command}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    record_seconds(command, time.monotonic() - started, result.returncode)
    return result


def record_seconds(command: str, seconds: float, returncode: int) -> None:
    """One line of test-output/shell-seconds.jsonl: the test, the command (its first 300 characters)."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    line = {
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0],
        "seconds": round(seconds, 1),
        "returncode": returncode,
        "command": command[:300],
    }
    with (TEST_OUTPUT / "shell-seconds.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


def background_command(command: str, env: dict[str, str]) -> subprocess.Popen:
    """`command` started in a shell with the venv `make run` makes activated, in a process group of its own
    (as a terminal or `timeout` gives it), with Ctrl-C's signals as a terminal leaves them
    (terminal_signals), stdout and stderr together; the caller stops it (Ctrl-C: SIGINT to the group)."""
    return subprocess.Popen(
        ["bash", "-c", f"source .venv/bin/activate && exec {command}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=terminal_signals,
    )


def terminal_signals() -> None:
    """In a child before it runs: SIGINT and SIGQUIT at their defaults, as in a terminal's foreground job.
    A test session started in the background (`... &` in a non-interactive shell, as CI may be) runs with
    both ignored, every process under it inherits that, a shell cannot undo it, and Python then never
    raises KeyboardInterrupt: `make docs` went on serving after Ctrl-C and left its build folder behind."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def wait_answering(process: subprocess.Popen, url: str, timeout_s: float = 600) -> None:
    """Until `url` answers; fails with the process's output if it exits first, or after `timeout_s`."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, process.stdout.read()[-5000:]
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout_s:.0f} s"
            time.sleep(2)


def remove_store_images(client: mlflow.MlflowClient) -> None:
    """The server images of every registered model of a store (found by its image namespace), and the
    builder stage kept for their repository once no image of it is left (a test's own model name, such
    as nightly-<hex>, would leave one per session; a name still in use keeps its build cache)."""
    import docker

    from sentclf.images import this_checkout

    engine = docker.from_env()
    repositories = set()
    for model in client.search_registered_models():
        namespace = model.tags.get("sentclf.image_namespace")
        if not namespace:
            continue
        for image in engine.images.list(filters={"label": f"sentclf.image_namespace={namespace}"}):
            for tag in image.tags or [image.id]:
                repositories.add(tag.rsplit(":", 1)[0])
                with contextlib.suppress(docker.errors.APIError):
                    engine.images.remove(tag, force=True)
    for repository in repositories:
        if not engine.images.list(name=repository):
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(f"{repository}-builder:{this_checkout()}", force=True)


@pytest.fixture(scope="session")
def typed_store(tmp_path_factory) -> Iterator[TypedStore]:
    """An empty store for the as-typed commands; its artifacts live under <repo>/mlruns (the root the
    steps mount) in a folder of their own, removed afterwards with the store's server images. The commands
    run in the venv `make run` makes (.venv), never the development venv the tests run in (.venv-dev)."""
    require_docker()
    if not (REPO_ROOT / ".venv" / "bin" / "activate").exists():
        pytest.fail("the docs' commands run in the venv `make run` makes: `make venv` first (make test does)")
    tag = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("typed-store")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment = f"e2e-{tag}"
    artifact_dir = REPO_ROOT / "mlruns" / experiment
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(experiment, artifact_location=str(artifact_dir))
    (root / "tmp").mkdir()
    (root / "mlflow-storage").mkdir()
    # Not inherited: an in-process step run of an earlier test turned system metrics on through this
    # variable (mlflow.enable_system_metrics_logging), which a user's shell does not have.
    leaked = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
    env = {k: v for k, v in os.environ.items() if k not in leaked}
    env |= {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLFLOW_TMP_DIR": str(root / "mlflow-storage"),
        "TMPDIR": str(root / "tmp"),
    }
    yield TypedStore(uri, experiment, experiment_id, root, env)
    remove_store_images(client)
    shutil.rmtree(artifact_dir, ignore_errors=True)
