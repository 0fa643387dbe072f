"""`make test`'s two pytest-xdist workers (tests/conftest.py): the Makefile passes them, every unit test that
reaches the Docker engine or times itself is in the engine group, and the unit worker's policy is
SCHED_IDLE for all its threads."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_OUTPUT, record_seconds
from tests.typed_blocks import REPO_ROOT, make_dry_run


def pytest_line(typed: str) -> str:
    """The pytest command line `typed` (a `make test ...` as a page prints it) would run."""
    (line,) = [line for line in make_dry_run(typed).splitlines() if " -m pytest " in line]
    return line


def test_make_test_runs_two_workers_and_test_workers_0_runs_one_process():
    assert pytest_line("make test").endswith(" -m pytest -n 2 --dist loadscope ")
    assert pytest_line("make test TEST_WORKERS=0").endswith(" -m pytest -n 0 --dist loadscope ")
    assert pytest_line("make test PYTEST_ARGS='-k docs'").endswith(" --dist loadscope -k docs")


def test_every_unit_module_that_reaches_the_engine_marks_it():
    """A unit test that starts containers in the idle worker would race the end-to-end tests' leftover
    checks: it must be marked `docker` (the engine group)."""
    for path in sorted((REPO_ROOT / "tests" / "unit").glob("test_*.py")):
        text = path.read_text()
        if re.search(r"require_docker\(\)|docker\.from_env\(\)", text):
            assert "pytest.mark.docker" in text, (
                f"{path.name} reaches the Docker engine without @pytest.mark.docker"
            )


def test_the_unit_worker_idles_every_thread_in_the_idle_cgroup_and_the_engine_group_gets_back_to_normal():
    script = """
import os, threading
from pathlib import Path
from tests.conftest import IDLE_CGROUP, cpu_cgroup, worker_idles
started = threading.Event(); stop = threading.Event()
def spin():
    started.set(); stop.wait()
thread = threading.Thread(target=spin); thread.start(); started.wait()
def policies():
    return {os.sched_getscheduler(int(task.name)) for task in Path("/proc/self/task").iterdir()}
home = cpu_cgroup()
worker_idles(True); idle, idle_cgroup = policies(), cpu_cgroup()
later = []
threading.Thread(target=lambda: later.append(os.sched_getscheduler(0))).start()
worker_idles(False); normal, normal_cgroup = policies(), cpu_cgroup()
stop.set(); thread.join()
print(idle == {os.SCHED_IDLE}, later == [os.SCHED_IDLE], normal == {os.SCHED_OTHER})
print(home is not None and idle_cgroup[1].endswith("/" + IDLE_CGROUP), normal_cgroup == home)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    idle, inherited, normal, in_idle_cgroup, home_again = result.stdout.split()
    assert idle == "True" and inherited == "True", result.stdout
    if os.geteuid() == 0:  # CI: back to the normal policy and the cgroups need root
        assert normal == "True" and home_again == "True", result.stdout
        assert in_idle_cgroup == "True" or not Path("/sys/fs/cgroup/cpu/cpu.shares").exists(), result.stdout


def test_the_engine_group_is_all_outside_tests_unit_and_each_unit_module_with_a_docker_or_timed_test():
    from tests.conftest import ENGINE_GROUP, test_group

    for module in (
        "tests/test_your_data.py",
        "tests/server/test_server_http.py",
        "tests/unit/test_step_launch.py",
    ):
        assert test_group(module) == ENGINE_GROUP, module
    assert test_group("tests/unit/test_evaluate_dead_server.py") == ENGINE_GROUP  # one docker test
    assert test_group("tests/unit/test_preprocess_sources.py") == ENGINE_GROUP  # two timed ones
    assert test_group("tests/unit/test_ui_links.py") == "tests/unit/test_ui_links.py"


def test_the_workers_run_the_engine_group_in_one_of_them(tmp_path):
    """Two modules of the engine group, one of them outside it: the engine group's three tests in one worker
    (plain loadscope would give each module a worker of its own). The run inside this one keeps its
    test-output apart: this session's shell-seconds.jsonl stays whole."""
    record_seconds("a command of this session", 0.0, 0)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadscope", "-v", "-p", "no:cacheprovider",
         "tests/unit/test_preprocess_sources.py::test_unreachable_hub_fails_fast",
         "tests/unit/test_explore.py::test_a_sentence_passes_stripped",
         "tests/unit/test_explore.py::test_many_classes_by_name",
         "tests/unit/test_ui_links.py"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=os.environ | {"SENTCLF_TEST_OUTPUT": str(tmp_path / "test-output")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    recorded = (TEST_OUTPUT / "shell-seconds.jsonl").read_text()
    assert '"command": "a command of this session"' in recorded
    workers = {}
    for worker, module in re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED (tests/unit/\w+\.py)", result.stdout):
        workers.setdefault(module, set()).add(worker)
    engine = workers["tests/unit/test_preprocess_sources.py"] | workers["tests/unit/test_explore.py"]
    assert len(engine) == 1, workers
