"""The rooms and what may import what (docs/architecture.md): no step imports another step or the
conductor; the shared package `sentclf` imports neither; the server imports nothing of the project but the
model's runtime, which imports nothing of the project at all; the host tools (`tools/`) sit above the
conductor and nothing but the tests imports them; a bench reaches into a step's modules only for the steps
it names (benchlib.use_steps). The imports are read from the code's syntax tree, so a lazy import inside a
function counts too."""

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# The pipeline's steps, and the monitor and score: rooms like them (own MLproject, container), not steps.
STEPS = ("preprocess", "train", "building", "evaluate", "monitor", "score")
# Each step's own modules are imported by bare name from its directory.
STEP_MODULES = {step: {p.stem for p in (REPO_ROOT / step).glob("*.py")} for step in STEPS}
STEP_MODULES["preprocess"] |= {"sources"}
ALL_STEP_MODULES = set().union(*STEP_MODULES.values())


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def python_files(room: str) -> list[Path]:
    return sorted(p for p in (REPO_ROOT / room).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("step", STEPS)
def test_no_step_imports_another_step_or_the_conductor(step):
    others = set().union(*(STEP_MODULES[s] | {s} for s in STEPS if s != step)) - STEP_MODULES[step]
    forbidden = others | {"conductor", "tools", "ops", "main", "bench", "tests"}
    for path in python_files(step):
        if "server" in path.relative_to(REPO_ROOT / step).parts:
            continue  # the server has its own rule below
        bad = imported_roots(path) & forbidden
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


def test_the_shared_package_imports_no_room():
    forbidden = {"conductor", "tools", "ops", "main", "bench", "tests", *STEPS} | ALL_STEP_MODULES
    for path in python_files("sentclf"):
        bad = imported_roots(path) & forbidden
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


def test_the_server_imports_only_itself_and_the_runtime():
    forbidden = {"sentclf", "conductor", "tools", "ops", "main", "bench", "tests", *STEPS}
    for path in python_files("server"):
        bad = imported_roots(path) & forbidden
        assert not bad, (
            f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}: the slim image has only its own code "
            "and sentclf_runtime"
        )


def test_the_step_image_holds_only_the_shared_package():
    """What goes into the step image (and so into every step's cache key) is sentclf/, not the conductor."""
    from conductor.step_image import STEP_IMAGE_SOURCES

    assert "sentclf" in STEP_IMAGE_SOURCES and "conductor" not in STEP_IMAGE_SOURCES
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "!sentclf/" in dockerignore and not any("conductor" in line for line in dockerignore)
    host_only = {"pipeline_lock", "step_cache", "local_backend", "ui_links"}
    assert not host_only & {p.stem for p in (REPO_ROOT / "sentclf").glob("*.py")}


def test_the_registered_models_code_needs_only_its_pip_requirements():
    """sentclf/text_model.py is the pyfunc's code (copied into every registered version with the runtime):
    it may import the standard library, numpy, pandas, mlflow and the runtime, nothing else of the
    project."""
    path = REPO_ROOT / "sentclf" / "text_model.py"
    allowed = {"numpy", "pandas", "mlflow", "sentclf_runtime", "__future__"}
    bad = {root for root in imported_roots(path) if root not in sys.stdlib_module_names} - allowed
    assert not bad, f"sentclf/text_model.py imports {sorted(bad)}: a registered model would not load"


def test_the_runtime_imports_only_numpy_onnxruntime_and_tokenizers():
    """The model's runtime goes into the slim server image and every registered version."""
    allowed = {"numpy", "onnxruntime", "tokenizers", "__future__"}
    for path in python_files("sentclf_runtime"):
        bad = {root for root in imported_roots(path) if root not in sys.stdlib_module_names} - allowed
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


def test_score_is_a_room_not_a_pipeline_step():
    from conductor.parameters import STEPS as PIPELINE_STEPS

    assert "score" not in PIPELINE_STEPS and (REPO_ROOT / "score" / "MLproject").is_file()


@pytest.mark.parametrize("room", ["conductor", "ops"])
def test_the_conductor_and_ops_import_no_tool_step_or_bench(room):
    """The pipeline's conductor and the nightly loop stand below the host tools: a tool may use them, never
    the other way round (and neither reaches into a step's code)."""
    forbidden = {"tools", "bench", "tests", *STEPS} | ALL_STEP_MODULES
    for path in python_files(room):
        bad = imported_roots(path) & forbidden
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"
    assert not imported_roots(REPO_ROOT / "main.py") & forbidden


def test_the_host_tools_use_the_conductor_and_sentclf_only():
    """tools/ (serve, serving manifests, tracking users, tune): host commands that are not the pipeline."""
    files = python_files("tools")
    assert {p.stem for p in files} >= {"serve", "serving_manifests", "tracking_users", "tune"}
    for path in files:
        bad = imported_roots(path) & ({"ops", "main", "bench", "tests", *STEPS} | ALL_STEP_MODULES)
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


def declared_steps(path: Path) -> set[str]:
    """The steps a bench names in its benchlib.use_steps(...) calls (string literals only)."""
    steps = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "use_steps"
        ):
            assert all(isinstance(a, ast.Constant) for a in node.args), (
                f"{path.name}: use_steps takes literals"
            )
            steps |= {a.value for a in node.args}
    return steps


@pytest.mark.parametrize("path", python_files("bench"), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_bench_reaches_only_into_the_steps_it_names(path):
    """A bench imports a step's modules by bare name after benchlib.use_steps(<step>...), so the reach is
    in the syntax tree: only modules of the steps it names, never tools, ops or the tests."""
    steps = declared_steps(path)
    assert steps <= set(STEPS), f"{path.name} names {sorted(steps - set(STEPS))}, no step"
    reachable = set().union(*(STEP_MODULES[step] for step in steps)) if steps else set()
    roots = imported_roots(path)
    bad = (roots & ALL_STEP_MODULES) - reachable
    assert not bad, (
        f"{path.relative_to(REPO_ROOT)} imports step modules {sorted(bad)} of steps it does not name"
    )
    assert not roots & {"tools", "ops", "main", "tests"}, f"{path.name} imports {sorted(roots)}"


def test_the_benches_reach_the_train_and_preprocess_steps():
    """The reach is real: the training benches use the steps' own loop and data code."""
    reach = {path.stem: declared_steps(path) for path in python_files("bench")}
    assert reach["recipe_sweep"] == reach["train_throughput"] == {"train", "preprocess"}
    assert reach["batch_scoring"] == {"train"}


def test_no_two_step_or_bench_modules_share_a_name():
    """The tests (and the benches) put every step folder and bench/ on sys.path: a module name used twice
    imports whichever folder comes first (bench/few_shot.py once hid train/few_shot.py from the train
    step's tests)."""
    folders = [*STEPS, "bench"]
    seen: dict[str, str] = {}
    clashes = []
    for folder in folders:
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            if path.stem in seen:
                clashes.append(f"{seen[path.stem]}/{path.name} and {folder}/{path.name}")
            seen[path.stem] = folder
    assert clashes == []
