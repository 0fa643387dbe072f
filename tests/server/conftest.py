"""Fixtures for the inference server tests: a tiny ONNX classifier + tokenizer built here (no torch, no hub),
helpers that run `python -m sentclf_server` as a subprocess, or the server image built with that model as a
container, on free loopback ports; the `server` fixture gives the protocol tests each in turn."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import docker
import docker.errors
import grpc
import numpy as np
import onnx
import pytest
from docker.models.containers import Container
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from sentclf.containers import free_ports
from sentclf.server_images import SERVER_PYTHONPATH
from tests.conftest import require_docker

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SRC = REPO_ROOT / "server"
if str(SERVER_SRC) not in sys.path:
    sys.path.insert(0, str(SERVER_SRC))  # lets unit tests import sentclf_server in-process

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = [
    *["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "is", "was", "good", "bad", "very", "book"],
    *["table", "green", "ideas", "sleep", "furiously", "colorless", "we", "they", "he", "she", "it"],
    *["read", "reads", "quickly", "slowly"],
]
MAX_SEQ_LENGTH = 16
MAX_REQUEST_BATCH = 64
MAX_MESSAGE_BYTES = 64 * 1024
BINARY_LABELS = ("unacceptable", "acceptable")
# A multi-class label set with names from the data, as a support-ticket classifier would have.
TICKET_LABELS = ("billing", "refund", "login", "other")


def build_tokenizer(path: Path) -> None:
    """WordLevel tokenizer with BERT-style specials; the post-processor adds [CLS] ... [SEP]."""
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.save(str(path))


def _slow_branch(source: str, size: int) -> list[onnx.NodeProto]:
    """Nodes computing `zero` = 0 * f(a size x size matmul chain) that ORT cannot constant-fold, because
    it depends on the input; used to make one inference take a noticeable time (drain test)."""
    h = helper
    fill = h.make_tensor("fill", TensorProto.FLOAT, [1], [0.01])
    return [
        h.make_node("ReduceSum", [source], ["slow_s"], keepdims=0),
        h.make_node("ConstantOfShape", ["slow_shape"], ["slow_c"], value=fill),
        h.make_node("Mul", ["slow_s", "tiny"], ["slow_eps"]),
        h.make_node("Add", ["slow_c", "slow_eps"], ["slow_x0"]),
        *[
            node
            for i in range(4)
            for node in (
                h.make_node("MatMul", [f"slow_x{i}", f"slow_x{i}"], [f"slow_m{i}"]),
                h.make_node("Tanh", [f"slow_m{i}"], [f"slow_x{i + 1}"]),
            )
        ],
        h.make_node("ReduceMean", ["slow_x4"], ["slow_mean"], keepdims=0),
        h.make_node("Mul", ["slow_mean", "zero_f"], ["zero"]),
    ]


def head_weights(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """W [2, N] and b [N] of the fixture model's head. Two classes: fixed weights. More: class k scores
    s * (mean_id * c_k - c_k^2 / 2), highest for the centre c_k nearest the sentence's mean token id, so
    sentences of different words fall in different classes (centres spread over the ids of WORDS)."""
    if num_classes == 2:
        return np.array([[0.25, -0.25], [-0.3, 0.3]]), np.array([0.5, -0.5])
    centres = np.linspace(4.0, 22.0, num_classes)
    scale = 1.0 / (centres[1] - centres[0])
    weights = np.stack([centres * scale, np.zeros(num_classes)])
    return weights, -(centres**2) / 2 * scale


def build_model(
    path: Path, with_token_type_ids: bool = True, slow_size: int = 0, num_classes: int = 2
) -> None:
    """logits = [mean_id, n_tokens] @ W + b over the unmasked tokens: different sentences give different
    outputs, padding does not change them (like a real BERT with an attention mask)."""
    h = helper
    weights, bias = head_weights(num_classes)
    dims = ["batch", "seq"]
    inputs = [
        h.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
        h.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
    ]
    nodes = [
        h.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        h.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        h.make_node("Mul", ["ids_f", "mask_f"], ["masked"]),
        h.make_node("ReduceSum", ["masked", "axis1"], ["id_sum"], keepdims=1),
        h.make_node("ReduceSum", ["mask_f", "axis1"], ["n_tok"], keepdims=1),
        h.make_node("Div", ["id_sum", "n_tok"], ["mean_id"]),
    ]
    if with_token_type_ids:
        inputs.append(h.make_tensor_value_info("token_type_ids", TensorProto.INT64, dims))
        nodes += [
            h.make_node("Cast", ["token_type_ids"], ["tt_f"], to=TensorProto.FLOAT),
            h.make_node("ReduceSum", ["tt_f", "axis1"], ["tt_sum"], keepdims=1),
            h.make_node("Add", ["n_tok", "tt_sum"], ["n_feat"]),
        ]
    else:
        nodes.append(h.make_node("Identity", ["n_tok"], ["n_feat"]))
    nodes += [
        h.make_node("Concat", ["mean_id", "n_feat"], ["features"], axis=1),
        h.make_node("MatMul", ["features", "W"], ["proj"]),
        h.make_node("Add", ["proj", "b"], ["logits0"] if slow_size else ["logits"]),
    ]
    initializers = [
        h.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        h.make_tensor("W", TensorProto.FLOAT, [2, num_classes], weights.ravel().tolist()),
        h.make_tensor("b", TensorProto.FLOAT, [num_classes], bias.tolist()),
    ]
    if slow_size:
        nodes += _slow_branch("ids_f", slow_size)
        nodes.append(h.make_node("Add", ["logits0", "zero"], ["logits"]))
        initializers += [
            h.make_tensor("slow_shape", TensorProto.INT64, [2], [slow_size, slow_size]),
            h.make_tensor("tiny", TensorProto.FLOAT, [], [1e-9]),
            h.make_tensor("zero_f", TensorProto.FLOAT, [], [0.0]),
        ]
    graph = h.make_graph(
        nodes,
        "tiny_classifier",
        inputs,
        [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
        initializers,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], producer_name="sentclf-tests")
    model.ir_version = 8  # old enough for any onnxruntime we pin
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def expected_probs(tokenizer_path: Path, sentences: list[str]) -> np.ndarray:
    """Reference implementation of the fixture model (for checking the server's numbers); the number of
    classes is that of the serving_config.json beside the tokenizer."""
    config = json.loads((tokenizer_path.parent / "serving_config.json").read_text())
    weights, bias = head_weights(len(config.get("labels", BINARY_LABELS)))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    rows = []
    for encoding in tokenizer.encode_batch(sentences):
        ids = np.array(encoding.ids, dtype=np.float64)
        rows.append([ids.mean(), len(ids)])
    logits = np.array(rows) @ weights + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def make_model_dir(
    path: Path, labels: Sequence[str] | None = BINARY_LABELS, model_name: str = "cola", **model_kwargs: object
) -> Path:
    """model.onnx with one logit per label, tokenizer.json and serving_config.json; labels=None writes a
    config without `labels`, as train steps did before the label set was data (a binary model)."""
    path.mkdir(parents=True, exist_ok=True)
    build_model(path / "model.onnx", num_classes=len(labels or BINARY_LABELS), **model_kwargs)
    build_tokenizer(path / "tokenizer.json")
    config = {"model_name": model_name, "model_version": "1", "max_seq_length": MAX_SEQ_LENGTH}
    if labels is not None:
        config["labels"] = list(labels)
    (path / "serving_config.json").write_text(json.dumps(config))
    path.chmod(0o755)  # readable by the image's service user when mounted into a container
    return path


# Test modules get helpers through fixtures rather than `from conftest import ...`, which breaks under
# pytest's importlib import mode and when another test directory also has a conftest.py.
@pytest.fixture(scope="session")
def limits() -> SimpleNamespace:
    return SimpleNamespace(
        max_seq_length=MAX_SEQ_LENGTH,
        max_request_batch=MAX_REQUEST_BATCH,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )


@pytest.fixture(scope="session")
def ticket_labels() -> tuple[str, ...]:
    return TICKET_LABELS


@pytest.fixture(scope="session")
def reference_probs() -> Callable[[Path, list[str]], np.ndarray]:
    return expected_probs


@pytest.fixture(scope="session")
def model_dir_factory() -> Callable[..., Path]:
    return make_model_dir


@pytest.fixture(scope="session")
def server_factory() -> Callable[..., ServerProcess]:
    return start_server


@pytest.fixture(scope="session")
def server_cmd() -> list[str]:
    return server_command()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def ticket_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A four-class model whose class names come from the data: billing, refund, login, other."""
    return make_model_dir(tmp_path_factory.mktemp("ticket_model"), labels=TICKET_LABELS, model_name="tickets")


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("slow_model"), slow_size=1024)


class _Server:
    """What the protocol tests need of a running server, whichever way it runs."""

    grpc_port: int
    metrics_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """host:port of the OIP HTTP listener (tritonclient.http's url)."""
        return f"127.0.0.1:{self.http_port}"

    def log(self) -> str:
        raise NotImplementedError

    def exit_code(self) -> int | None:
        """None while the server runs."""
        raise NotImplementedError

    def health(self, service: str = "", timeout: float = 2.0) -> int:
        with grpc.insecure_channel(self.url) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise AssertionError(f"server exited with {code}:\n{self.log()}")
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not SERVING after {timeout}s:\n{self.log()}")


@dataclass
class ServerProcess(_Server):
    proc: subprocess.Popen
    grpc_port: int
    metrics_port: int
    log_path: Path
    http_port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class ServerContainer(_Server):
    """The server image run on the host network (bound to loopback), as the pipeline runs it."""

    container: Container
    grpc_port: int
    metrics_port: int
    http_port: int = 0

    def log(self) -> str:
        return self.container.logs().decode(errors="replace")

    def exit_code(self) -> int | None:
        self.container.reload()
        return self.container.attrs["State"]["ExitCode"] if self.container.status == "exited" else None

    def stop(self) -> int:
        """SIGTERM (the graceful drain), the exit code, and the container removed."""
        try:
            if self.exit_code() is None:
                self.container.kill(signal="SIGTERM")
            return self.container.wait(timeout=30)["StatusCode"]
        finally:
            self.container.remove(force=True)


def server_command() -> list[str]:
    """The server's interpreter is this one unless SENTCLF_SERVER_PYTHON names another, e.g. a venv built
    from server/requirements.txt alone, to prove that lock is complete."""
    return [os.environ.get("SENTCLF_SERVER_PYTHON") or sys.executable, "-m", "sentclf_server"]


def server_env(grpc_port: int, metrics_port: int, http_port: int = 0, **overrides: str) -> dict[str, str]:
    """The test settings: loopback, small request limits, one ORT thread; HTTP off unless given a port."""
    return {
        "BIND_ADDRESS": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        "HTTP_PORT": str(http_port),
        "MAX_REQUEST_BATCH": str(MAX_REQUEST_BATCH),
        "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "ORT_INTRA_OP_THREADS": "1",
        **overrides,
    }


def start_server(model_dir: Path, log_path: Path, **env_overrides: str) -> ServerProcess:
    """Start `python -m sentclf_server` bound to loopback on free ports; returns once it is SERVING."""
    grpc_port, metrics_port, http_port = free_ports(3)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [SERVER_PYTHONPATH, os.environ.get("PYTHONPATH")])),
        "MODEL_DIR": str(model_dir),
        **server_env(grpc_port, metrics_port, http_port, **env_overrides),
    }
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(server_command(), env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = ServerProcess(proc, grpc_port, metrics_port, log_path, http_port)
    try:
        server.wait_serving()
    except BaseException:
        server.stop()
        raise
    return server


def start_container(
    image: str, wait: bool = True, model_dir: Path | None = None, **env_overrides: str
) -> ServerContainer:
    """Run the server image on the host network, bound to loopback on free ports; by default returns once
    it is SERVING. `model_dir` is mounted (read-only) over the model baked into the image. The caller
    stops it (ServerContainer.stop removes it)."""
    grpc_port, metrics_port, http_port = free_ports(3)
    volumes = {str(model_dir): {"bind": "/models/model", "mode": "ro"}} if model_dir else None
    container = docker.from_env().containers.run(
        image,
        detach=True,
        name=f"sentclf-test-server-{uuid.uuid4().hex[:8]}",
        network_mode="host",
        environment=server_env(grpc_port, metrics_port, http_port, **env_overrides),
        volumes=volumes,
    )
    server = ServerContainer(container, grpc_port, metrics_port, http_port)
    if wait:
        try:
            server.wait_serving()
        except BaseException:
            server.stop()
            raise
    return server


def build_server_image(model_dir: Path, context: Path, tag: str) -> None:
    """`docker build` of server as the building step assembles it (its SERVER_SOURCES, the model,
    build inputs), from the same base image. The builder stage is built and tagged first (`<tag>-builder`)
    so that removing both tags afterwards leaves no dangling stage behind."""
    from sentclf.images import resolve_base_image, write_build_inputs
    from sentclf.server_images import SERVER_SOURCES

    for name, source in SERVER_SOURCES.items():
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    shutil.copytree(model_dir, context / "model")
    write_build_inputs(context / "build-inputs")
    client = docker.from_env()
    base = resolve_base_image(client, "auto")
    repository, version = tag.rsplit(":", 1)
    for target, image_tag in (("builder", f"{repository}-builder:{version}"), (None, tag)):
        client.images.build(
            path=str(context),
            tag=image_tag,
            target=target,
            buildargs={"BASE_IMAGE": base},
            network_mode="host",
            rm=True,
            forcerm=True,
        )


@pytest.fixture(scope="session")
def server_image(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server image built with the fixture model; both its tags are removed afterwards."""
    require_docker()
    tag = f"sentclf-test-server:{uuid.uuid4().hex[:8]}"
    try:
        build_server_image(model_dir, tmp_path_factory.mktemp("image-context"), tag)
        yield tag
    finally:
        client = docker.from_env()
        repository, version = tag.rsplit(":", 1)
        for image_tag in (tag, f"{repository}-builder:{version}"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(image_tag, force=True)


@pytest.fixture(scope="session")
def image_factory() -> Callable[..., ServerContainer]:
    return start_container


@pytest.fixture(scope="module", params=["process", pytest.param("image", marks=pytest.mark.docker)])
def server(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Server]:
    """The server under test: `python -m sentclf_server` from the source tree, then the built image."""
    if request.param == "process":
        running: _Server = start_server(model_dir, tmp_path_factory.mktemp("server") / "server.log")
    else:
        running = start_container(request.getfixturevalue("server_image"))
    yield running
    assert running.stop() == 0, running.log()


def _serve_mounted(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Server]:
    """`model_dir` served like `server`: from the source tree, then by the image built for the binary
    fixture model with `model_dir` mounted over it."""
    if request.param == "process":
        running: _Server = start_server(model_dir, tmp_path_factory.mktemp("server") / "server.log")
    else:
        running = start_container(request.getfixturevalue("server_image"), model_dir=model_dir)
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module", params=["process", pytest.param("image", marks=pytest.mark.docker)])
def ticket_server(
    request: pytest.FixtureRequest, ticket_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Server]:
    """The four-class model, served like `server`."""
    yield from _serve_mounted(request, ticket_model_dir, tmp_path_factory)


@pytest.fixture(params=["process", pytest.param("image", marks=pytest.mark.docker)])
def slow_server(
    request: pytest.FixtureRequest, slow_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Server]:
    """The slow model (~0.2 s a run, same answers as the fixture model), served like `server`: requests
    that arrive during a run wait for it, whatever the machine's load, so batching them can be asserted."""
    yield from _serve_mounted(request, slow_model_dir, tmp_path_factory)
