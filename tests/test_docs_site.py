"""`make docs` as the README prints it: the docs site served (strict build, live reload) on the port the
README names through DOCS_PORT, its pages reachable, and Ctrl-C (SIGINT to its process group, as a terminal
sends it) stopping it with nothing left behind: mkdocs removes its build folder only on SIGINT, and a folder
left in the session's TMPDIR fails the test that checks nothing is left. The command starts with SIGINT at
its default (TypedStore.background: a session started in the background would otherwise pass on an
ignored SIGINT, and mkdocs would serve on); if it still does not stop, the test fails with its output."""

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from sentclf.containers import free_port

from .conftest import REPO_ROOT, wait_answering


def test_make_docs_serves_the_site_as_the_readme_says(typed_store):
    readme = (REPO_ROOT / "README.md").read_text()
    assert "`make docs` serves it on http://127.0.0.1:15080" in readme and "(`DOCS_PORT`)" in readme
    port = free_port()
    process = typed_store.background(f"make docs DOCS_PORT={port}")
    try:
        wait_answering(process, f"http://127.0.0.1:{port}/", timeout_s=300)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/benchmarks/", timeout=30).read().decode()
        assert "<h1" in page and "Benchmarks" in page
    finally:
        os.killpg(process.pid, signal.SIGINT)
        # Read while waiting, so that nothing it prints as it shuts down can fill the pipe and stall it.
        try:
            process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output = process.communicate()[0]
            pytest.fail(f"`make docs` did not stop 120 s after Ctrl-C; its output:\n{output[-5000:]}")
    assert list(Path(typed_store.env["TMPDIR"]).glob("mkdocs_*")) == []
