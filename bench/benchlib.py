"""What several benches share: the inputs (the newest server image, the model inside it, CoLA sentences),
the server container they measure, the transport's own round trip, and reaching code that lives in other
rooms: a step's modules by their bare names (`use_steps`, the one sys.path edit of bench/, which
tests/unit/test_architecture.py reads with the imports it allows), the server package loaded from its
directory.

The benches are scripts (`python bench/<name>.py`), which puts bench/ first on sys.path, so they
`import benchlib`; no bench imports another bench. The load itself is sentclf.loadgen, the evaluate
step's own.
"""

import contextlib
import csv
import http.client
import importlib.machinery
import importlib.util
import io
import json
import os
import random
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import docker
import docker.errors
import mlflow
import pandas as pd
from docker.models.containers import Container

from sentclf.containers import CONTAINER_LABEL, LOOPBACK, running_server
from sentclf.contract import ONNX_VARIANTS_DIR, SERVED_VARIANT_TAG
from sentclf.engine import docker_client
from sentclf.kserve_client import connect
from sentclf.metrics import percentile_ms
from sentclf.schema import DATA_ARTIFACT_DIR, LABEL_COLUMN, TEXT_COLUMN
from sentclf.server_images import MODEL_NAME_LABEL, MODEL_VERSION_LABEL
from sentclf.tracking import version_data_run_id

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_SRC = REPO_ROOT / "server"
CORES = os.cpu_count() or 1
DEFAULT_SENTENCES = REPO_ROOT / "preprocess" / "data" / "cola" / "in_domain_dev.tsv"
CONTAINER_PREFIX = "sentclf-bench"
SERVED_MODEL_DIR = "/models/model"  # where a server image holds its model (the server's MODEL_DIR default)
# The CPU features a figure depends on, by the flags /proc/cpuinfo lists for them: native bfloat16 (bf16
# training and inference pay off, else they are emulated), int8 dot products (dynamic int8 quantization),
# AVX2 (the floor every kernel here assumes).
CPU_FEATURES = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "avx2": ("avx2",),
}


class BenchError(RuntimeError):
    """Something the bench needs is missing or a contender failed to start; the message says what."""


def raise_interrupt(signum: int, frame) -> None:
    """A SIGTERM handler: turn the signal into KeyboardInterrupt so the finally blocks remove containers
    and peer process groups."""
    raise KeyboardInterrupt(f"signal {signum}")


# ---- code from other rooms ---------------------------------------------------------------------------------


def cpu_summary(cpuinfo: str, cores: int = CORES) -> str:
    """One line naming the CPU and its features, for every printed figure (they hold on that CPU only):
    `CPU Intel(R) Xeon(R) ..., 2 cores; bf16 yes (avx512_bf16), vnni yes (avx512_vnni), avx2 yes`."""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    features = []
    for name, names in CPU_FEATURES.items():
        present = [flag for flag in names if flag in flags]
        shown = f" ({', '.join(present)})" if present and present != [name] else ""
        features.append(f"{name} {'yes' if present else 'no'}{shown}")
    return f"CPU {fields.get('model name', 'unknown')}, {cores} cores; {', '.join(features)}"


def cpu_line() -> str:
    """cpu_summary of this machine (`grep -m1 'model name' /proc/cpuinfo` and its flags)."""
    try:
        return cpu_summary(Path("/proc/cpuinfo").read_text())
    except OSError as error:
        return f"CPU unknown ({error})"


def load_module(name: str, directory: Path) -> ModuleType:
    """Import the module or package `name` found in `directory`, as `import name` would with `directory`
    on sys.path, without putting it there. A module already imported under that name is returned."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.machinery.PathFinder.find_spec(name, [str(directory)])
    if spec is None or spec.loader is None:
        raise BenchError(f"no module {name} in {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def use_steps(*steps: str) -> None:
    """Let this bench `import` the named steps' own modules (e.g. `training` of train/) by bare name, as
    each step imports its siblings (it runs with its directory as working directory). Called before those
    imports; tests/unit/test_architecture.py checks that a bench imports step modules only of the steps
    it names here."""
    for step in steps:
        directory = REPO_ROOT / step
        if not (directory / "MLproject").is_file():
            raise BenchError(f"{step} is no step of this repository (no {directory / 'MLproject'})")
        if str(directory) not in sys.path:
            sys.path.insert(1, str(directory))  # after bench/ itself, before the installed packages


def labelled_frames(folder: Path, text_column: str, label_column: str, seed: int) -> dict[str, pd.DataFrame]:
    """What examples/few_labels.py wrote (data/train.csv, data/test.csv), split as preprocess splits it:
    train (less one row per class), validation (that row per class) and test, labels as class indices."""
    frames = {}
    for split in ("train", "test"):
        frame = pd.read_csv(folder / "data" / f"{split}.csv", dtype=str, keep_default_na=False)
        frames[split] = frame.rename(columns={text_column: TEXT_COLUMN, label_column: LABEL_COLUMN})
    names = sorted(frames["train"][LABEL_COLUMN].unique())
    for frame in frames.values():
        frame[LABEL_COLUMN] = frame[LABEL_COLUMN].map({name: index for index, name in enumerate(names)})
    held = frames["train"].groupby(LABEL_COLUMN).sample(n=1, random_state=seed).index
    frames["validation"] = frames["train"].loc[held].reset_index(drop=True)
    frames["train"] = frames["train"].drop(index=held).reset_index(drop=True)
    return frames


def example_tickets(folder: Path) -> Path:
    """The templated multi-label tickets `make example-data` writes (examples/multilabel/generate.py, the
    same bytes every time), written into `folder`; the path of its tickets.csv (labels a `|` list)."""
    generate = load_module("generate", REPO_ROOT / "examples" / "multilabel")
    listed, _ = generate.write_tickets(folder)
    return listed


def server_package() -> ModuleType:
    """The inference server's package (server/sentclf_server), so `sentclf_server.<module>`
    imports work in this process: the server's own tokenizer + ONNX Runtime code, called in-process."""
    return load_module("sentclf_server", SERVER_SRC)


# ---- inputs ------------------------------------------------------------------------------------------------


def newest_server_image(client: docker.DockerClient) -> str:
    """The most recently created local image whose repository ends in `-server`."""
    tagged = [
        (image.attrs["Created"], tag)
        for image in client.images.list()
        for tag in image.tags
        if tag.rsplit(":", 1)[0].endswith("-server")
    ]
    if not tagged:
        raise BenchError("no local `*-server` image: run `make run` first (its building step builds one)")
    return max(tagged)[1]


def extract_model(client: docker.DockerClient, image: str, target: Path) -> Path:
    """Copy SERVED_MODEL_DIR out of `image` (docker create + get_archive) so every contender serves the
    identical ONNX model and tokenizer. The created container never runs and is always removed."""
    try:
        container = client.containers.create(
            image,
            name=f"{CONTAINER_PREFIX}-extract-{uuid.uuid4().hex[:8]}",
            labels={CONTAINER_LABEL: "1"},
            network_mode="host",
        )
    except docker.errors.ImageNotFound:
        raise BenchError(
            f"no local image {image}: run `make run` first (or name another --server-image)"
        ) from None
    try:
        stream, _ = container.get_archive(SERVED_MODEL_DIR)
        archive = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=archive) as tar:
        tar.extractall(target, filter="data")
    model_dir = target / "model"
    missing = [
        n for n in ("model.onnx", "tokenizer.json", "serving_config.json") if not (model_dir / n).is_file()
    ]
    if missing:
        raise BenchError(f"{image}:/models/model lacks {missing}")
    return model_dir


def load_sentences(path: Path, seed: int) -> list[str]:
    """CoLA dev sentences (headerless TSV, sentence in the 4th column), or a `.txt` file's non-blank lines
    (a task's own texts), shuffled with a fixed seed so every contender sees the same request sequence."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix == ".txt":
            sentences = [line.strip() for line in handle if line.strip()]
        else:
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            sentences = [row[3] for row in rows if len(row) > 3]
    if not sentences:
        raise BenchError(f"no sentences in {path}")
    random.Random(seed).shuffle(sentences)
    return sentences


# ---- the server under test ---------------------------------------------------------------------------------


@contextlib.contextmanager
def server_container(
    image: str, env: dict[str, str], start_timeout_s: float, volumes: dict[str, dict[str, str]] | None = None
) -> Iterator[tuple[Container, int, float]]:
    """The server image started as the pipeline starts it, named as the benches' containers are; yields
    (container, gRPC port, seconds to SERVING) and always removes it."""
    with running_server(image, env, start_timeout_s, CONTAINER_PREFIX, volumes=volumes) as started:
        yield started


def round_trip_floor_ms(port: int, calls: int = 200) -> float:
    """p50 of ServerLive calls over the same tritonclient gRPC client: the transport's own cost per
    request (client + gRPC stacks both ways) with no model work, the part of the latency no server code
    can remove."""
    client = connect(port)
    try:
        client.is_server_live()
        latencies = []
        for _ in range(calls):
            began = time.perf_counter()
            client.is_server_live()
            latencies.append(time.perf_counter() - began)
    finally:
        client.close()
    return percentile_ms(latencies, 50)


def http_status(port: int, path: str, timeout_s: float = 2.0) -> int | None:
    """The status of GET `path` on LOOPBACK:`port`, or None when nothing answers."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def http_round_trip_floor_ms(port: int, calls: int = 200) -> float:
    """p50 of GET /v2/health/live over one keep-alive connection: the HTTP side's own cost per request
    (client + HTTP stacks both ways) with no model work, as round_trip_floor_ms is gRPC's."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        latencies = []
        for index in range(calls + 1):
            began = time.perf_counter()
            connection.request("GET", "/v2/health/live")
            connection.getresponse().read()
            if index:  # the first one opens the connection
                latencies.append(time.perf_counter() - began)
    finally:
        connection.close()
    return percentile_ms(latencies, 50)


def image_size_mb(client: docker.DockerClient, name: str) -> float | None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        return client.images.get(name).attrs["Size"] / 1e6
    return None


def registered_model_files(
    model_name: str, version_or_alias: str, target: Path
) -> tuple[Path, Path, dict, Path]:
    """The fp32 model.onnx, tokenizer.json, the serving config and the data folder of a registered version
    (the files as the train step logs them under the model's `artifacts/`; of a version that serves int8,
    its fp32 twin, so a bench never quantises an int8 model again), downloaded under `target`."""
    client = mlflow.MlflowClient()
    version = version_or_alias
    if not version_or_alias.isdigit():
        version = client.get_model_version_by_alias(model_name, version_or_alias).version
    model = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=str(target)))
    data_run = version_data_run_id(model_name, str(version))
    if not data_run:
        sys.exit(f"{model_name} version {version} records no preprocess run: retrain it with `make run`")
    data = mlflow.artifacts.download_artifacts(
        run_id=data_run, artifact_path=DATA_ARTIFACT_DIR, dst_path=str(target / "data")
    )
    files = model / "artifacts"
    config = json.loads((files / "serving_config.json").read_text())
    fp32 = fp32_twin(model_name, str(version), target) or files / "model.onnx"
    return fp32, files / "tokenizer.json", config, Path(data)


def fp32_twin(model_name: str, version: str, target: Path) -> Path | None:
    """The fp32 model a version's train run kept beside the int8 model it serves (`onnx_variants/
    model.onnx`, downloaded under `target`), or None when the version serves no int8 model."""
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(model_name, version).run_id
    if client.get_run(run_id).data.tags.get(SERVED_VARIANT_TAG) != "int8":
        return None
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"{ONNX_VARIANTS_DIR}/model.onnx", dst_path=str(target / "fp32")
    )
    return Path(path)


def image_fp32_twin(image: str, workdir: Path) -> Path:
    """The fp32 model that the train run of `image`'s version kept beside the int8 model it serves, found
    through the image's model labels and the tracking store."""
    labels = docker_client().images.get(image).labels or {}
    name, version = labels.get(MODEL_NAME_LABEL), labels.get(MODEL_VERSION_LABEL)
    if not (name and version):
        raise BenchError(
            f"{image} has no {MODEL_NAME_LABEL}/{MODEL_VERSION_LABEL} labels: name an image the "
            "pipeline built, or leave --against-fp32 out"
        )
    path = fp32_twin(name, version, workdir)
    if path is None:
        raise BenchError(
            f"{name} version {version} does not serve int8: --against-fp32 compares a version trained with "
            'make run ARGS="-P serve_variant=int8" whose int8 model passed the rule (docs/int8.md)'
        )
    return path


def model_volume(model_file: Path | None) -> dict[str, dict[str, str]] | None:
    """The bind mount that serves `model_file` in place of a server image's own model.onnx."""
    if model_file is None:
        return None
    return {str(model_file): {"bind": f"{SERVED_MODEL_DIR}/model.onnx", "mode": "ro"}}
