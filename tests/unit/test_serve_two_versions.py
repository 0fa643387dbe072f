"""`make serve` with a challenger: the route as the server takes it, and the two-line Dockerfile of the image
holding both versions (tests/server/test_server_versions.py builds and runs one)."""

import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.typed_blocks import typed_block
from tools.serve import CHALLENGER_MODEL_DIR, ServeError, both_versions_dockerfile, check_route


def test_routes_the_server_takes():
    assert check_route("shadow") == "shadow"
    assert check_route(" SPLIT:10 ") == "split:10"
    assert check_route("split:2.5") == "split:2.5"
    for bad in ("split:101", "split:", "mirror", "split:-3", "shadow:1"):
        with pytest.raises(ServeError, match="use shadow, or split"):
            check_route(bad)


def test_the_image_is_the_champions_plus_the_challengers_model():
    dockerfile = both_versions_dockerfile("cola-classifier-server:3-abc", "cola-classifier-server:4-def")
    assert dockerfile.splitlines() == [
        "FROM cola-classifier-server:3-abc",
        f"COPY --from=cola-classifier-server:4-def /models/model {CHALLENGER_MODEL_DIR}",
        f"ENV CHALLENGER_DIR={CHALLENGER_MODEL_DIR}",
    ]


def test_make_serve_passes_challenger_and_route():
    printed = subprocess.run(
        ["make", "-n", "serve", "CHALLENGER=models:/cola-classifier@challenger", "ROUTE=split:10"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '--challenger "models:/cola-classifier@challenger" --route "split:10"' in printed


def test_the_serving_pages_two_version_commands_pass_what_they_say():
    """docs/serving.md's block, line by line, through `make -n` (nothing runs; tests/test_live_loop.py
    serves the shadow line for real)."""
    block = typed_block("serve-two-versions")
    for line, route in zip(block.lines, ("shadow", "split:10"), strict=True):
        printed = subprocess.run(
            [*shlex.split(line), "-n"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert '--model "models:/cola-classifier@champion"' in printed, printed
        assert f'--challenger "models:/cola-classifier@challenger" --route "{route}"' in printed, printed


def test_a_bad_route_is_refused_before_anything_runs():
    done = subprocess.run(
        [sys.executable, "-m", "tools.serve", "--challenger", "models:/x@y", "--route", "split:200"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={"MLFLOW_TRACKING_URI": "sqlite:////nonexistent/db", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "ROUTE='split:200'" in done.stderr, done.stderr
