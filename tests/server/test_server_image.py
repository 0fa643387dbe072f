"""The server image itself (built by the `server_image` fixture from server with the fixture model):
what it holds, who it runs as, how it stops. The protocol tests in test_server_grpc.py run against it too,
through the `server` fixture's `image` parameter."""

from __future__ import annotations

import re
import tarfile
from pathlib import PurePosixPath

import docker
import pytest

pytestmark = pytest.mark.docker

# The runtime without the model (the fixture model is a few kB): interpreter, stdlib, venv, libraries.
RUNTIME_BUDGET_MB = 200


@pytest.fixture(scope="module")
def image_files(server_image: str) -> dict[str, tarfile.TarInfo]:
    """Every path in the image's file system (from `docker export` of a created, never started container)."""
    client = docker.from_env()
    container = client.containers.create(server_image, network_mode="host")
    try:
        stream = container.export()
        with tarfile.open(fileobj=_Reader(stream), mode="r|") as tar:
            return {"/" + member.name.rstrip("/"): member for member in tar}
    finally:
        container.remove(force=True)


class _Reader:
    """A file object over the export's chunk iterator (tarfile's stream mode reads sequentially)."""

    def __init__(self, chunks) -> None:
        self._chunks, self._buffer = iter(chunks), b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def test_image_runs_as_the_non_root_service_user(server_image: str, image_files) -> None:
    config = docker.from_env().images.get(server_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python3", "-m", "sentclf_server"]
    assert "/etc/passwd" in image_files and "/etc/group" in image_files


def test_image_holds_the_runtime_only(image_files) -> None:
    paths = set(image_files)
    names = {PurePosixPath(path).name for path in paths}
    site = next(p for p in paths if re.fullmatch(r"/opt/venv/lib/python3\.\d+/site-packages", p))
    packages = {PurePosixPath(p).name for p in paths if str(PurePosixPath(p).parent) == site}
    # No installer, no shell, no package manager, no build input (the proxy CA above all).
    assert not {"pip", "setuptools", "ensurepip"} & packages
    assert not any(name.startswith(("pip-", "setuptools-")) for name in packages)
    assert not {"sh", "bash", "dash", "apt", "apt-get", "dpkg"} & names
    assert not {"ca.crt", "ca-bundle.pem", "pip.conf", "requirements.txt", "slim_rootfs.py"} & names
    assert not any(p.startswith(("/tmp/build", "/var/lib/dpkg", "/etc/ssl", "/rootfs")) for p in paths)
    # tritonclient is reduced to its generated KServe v2 stubs; its own dependencies are absent.
    triton = {p.removeprefix(f"{site}/tritonclient") for p in paths if p.startswith(f"{site}/tritonclient")}
    modules = {p for p in triton if p.endswith(".py")}
    assert modules == {
        "/__init__.py",
        "/grpc/__init__.py",
        "/grpc/service_pb2.py",
        "/grpc/service_pb2_grpc.py",
        "/grpc/model_config_pb2.py",
    }
    assert not {"ml_dtypes", "rapidjson", "urllib3"} & {name.split(".")[0] for name in packages}
    # What slim_rootfs.py drops from the stdlib and the venv.
    assert not any(re.search(r"/python3\.\d+/(test|idlelib|tkinter|lib2to3|distutils)/", p) for p in paths)
    assert not any("/onnxruntime/transformers/" in p or "/numpy/f2py/" in p for p in paths)
    assert not any(PurePosixPath(p).name.startswith("libonnxruntime.so") for p in paths)


def test_image_runtime_fits_the_size_budget(server_image: str) -> None:
    size_mb = docker.from_env().images.get(server_image).attrs["Size"] / 1e6
    assert size_mb < RUNTIME_BUDGET_MB, f"{size_mb:.0f} MB without a real model"


def test_image_drains_and_exits_0_on_sigterm(server_image: str, image_factory) -> None:
    server = image_factory(server_image)
    try:
        server.container.kill(signal="SIGTERM")  # to PID 1: python itself, there is no init in the image
        code = server.container.wait(timeout=30)["StatusCode"]
        log = server.log()
    finally:
        server.stop()
    assert code == 0 and "drained; exiting" in log, log


def test_image_refuses_a_bad_setting_with_exit_2(server_image: str, image_factory) -> None:
    server = image_factory(server_image, wait=False, ORT_GRAPH_OPTIMIZATION="turbo")
    try:
        code = server.container.wait(timeout=60)["StatusCode"]
        log = server.log()
    finally:
        server.stop()
    assert code == 2 and "ORT_GRAPH_OPTIMIZATION must be one of" in log
