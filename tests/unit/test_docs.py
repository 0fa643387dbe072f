"""The docs as a user meets them: the README stays a front door whose links resolve, the site builds in
strict mode (a dead link, a missing anchor or a page left out of `nav` fails), every block a page marks
`as-typed` is taken by a test (tests/typed_blocks.py), and the Makefile's help, ports and set-up say
what the pages say. Fast: no Docker, no pipeline."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.typed_blocks import PAGES, REPO_ROOT, all_blocks, make_dry_run, typed_block

README = REPO_ROOT / "README.md"


def test_the_readme_is_a_front_door_with_the_two_set_up_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "make run" in text and "make test" in text
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text):
        assert (REPO_ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_the_site_builds_strictly(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mkdocs is not installed in this venv: it is in requirements/dev.txt (make dev-venv)")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_every_marked_block_is_taken_by_a_test_and_named_once():
    blocks = all_blocks()
    names = [b.name for b in blocks]
    assert len(names) == len(set(names)), f"two marked blocks share a name: {names}"
    assert {"pipeline", "scoring", "monitor", "serving", "team"} <= set(names), names
    tests = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").rglob("test_*.py"))
    for block in blocks:
        assert block.lines, f"{block.where} is empty"
        assert f'typed_block("{block.name}")' in tests, f"{block.where}: no test takes it"


def test_a_marker_not_directly_before_a_bash_block_is_an_error():
    for page in PAGES:
        if not page.exists():
            continue
        markers = len(re.findall(r"^[ \t]*<!--\s*as-typed:", page.read_text(), re.M))
        assert markers == len(all_blocks([page])), (
            f"{page}: an as-typed marker without its bash block after it"
        )


def test_the_cpu_flags_block_as_typed():
    (line,) = typed_block("cpu-flags").lines
    result = subprocess.run(["bash", "-c", line], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "model name" in result.stdout
    assert re.search(r"^(avx512_bf16|amx_bf16|no native bf16: fp32)$", result.stdout, re.M), result.stdout


def test_make_help_lists_the_targets_from_the_makefiles_comments():
    result = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    documented = re.findall(r"^## ([a-z-]+):", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert {"run", "test", "ui", "docs", "serve", "score-image", "spark-cluster"} <= set(documented)
    for target in documented:
        assert f"  make {target}\n" in result.stdout, target
    assert not re.search(r"^\s*## ", result.stdout, re.M)


def test_make_ui_takes_a_port_and_the_tracking_server_does_not_collide_with_it():
    assert "--port 5000" in make_dry_run("make ui")
    assert "--port 5001" in make_dry_run("make ui UI_PORT=5001")  # as the docs print it: make ui UI_PORT=5001
    assert re.search(r"^export TRACKING_PORT \?= 5050$", (REPO_ROOT / "Makefile").read_text(), re.M)
    script = (REPO_ROOT / "scripts" / "tracking-server.sh").read_text()
    assert "port=${TRACKING_PORT:-5050}" in script


def test_make_help_as_typed_lists_the_targets_the_docs_name():
    """`make help` (README, docs/index.md) in a shell, as printed: every target the pages tell a person
    to type is listed with its description."""
    listed = subprocess.run(
        ["bash", "-c", "make help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for target in ("run", "test", "serve", "ui", "docs", "docs-build", "example-data", "explore", "bench"):
        assert f"\n  make {target}\n" in listed, target


def test_make_docs_serves_the_site_on_a_port_of_its_own():
    assert "mkdocs serve --strict --dev-addr 127.0.0.1:15080" in make_dry_run("make docs")
    assert "--dev-addr 127.0.0.1:15099" in make_dry_run("make docs DOCS_PORT=15099")


def test_make_run_builds_the_step_image_and_not_the_score_image():
    planned = make_dry_run("make run")
    assert "conductor.step_image ensure-step" in planned
    assert "ensure-score" not in planned
    assert "conductor.step_image ensure-score" in make_dry_run("make score-image")


# The `make` lines the pages print in prose, with what each hands to `mlflow run` or the serve tool: make
# parses them as printed (dry, nothing runs); the commands they expand to run as typed elsewhere
# (tests/test_commands_as_typed.py, the pages' own tests).
PROSE_MAKE_LINES = {
    'make run ARGS="-P epochs=1 -P max_train_samples=256"': (
        ' exec .venv/bin/mlflow run . --env-manager local \\\n    --storage-dir "$storage" '
        "-P epochs=1 -P max_train_samples=256\n"
    ),
    'make run ARGS="-P serve_variant=int8"': '--storage-dir "$storage" -P serve_variant=int8\n',
    'make step STEP=train ARGS="-P epochs=5"': (
        ' exec .venv/bin/mlflow run train -A network=host \\\n    --storage-dir "$storage" -P epochs=5\n'
    ),
    "make serve MODEL=models:/movie-replies-classifier@champion": (
        '.venv/bin/python -m tools.serve --model "models:/movie-replies-classifier@champion"'
    ),
}


@pytest.mark.parametrize("line", PROSE_MAKE_LINES)
def test_a_make_line_in_the_prose_hands_its_arguments_on_as_printed(line):
    assert any(f"`{line}`" in page.read_text() for page in PAGES), f"no page prints `{line}` any more"
    assert PROSE_MAKE_LINES[line] in make_dry_run(line)
