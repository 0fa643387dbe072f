"""The live loop as docs/operations/live-loop.md prints it.

Without Docker: every command of the page names what exists (the promotion's options, the monitor's
parameters, the nightly settings).

End to end (docker, e2e): two real registered versions served in shadow by one server (`make serve
MODEL=... CHALLENGER=... ROUTE=shadow`, as the page prints it), a few hundred labelled CoLA sentences
sent over HTTP and gRPC with request ids, their labels written as a file, the monitor run as printed: each
version's live MCC equals what the test computes from the answers (the champion's as returned to the
caller, the challenger's as captured) and the labels. Then the promotion, as printed, promotes a clearly
better challenger and keeps a worse one on the same real traffic ("better" made by the labels: where the
two versions disagree, the labels side with one of them).
"""

import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ops import nightly, promote_live
from sentclf.metrics import matthews_corrcoef

from .conftest import REPO_ROOT, background_command, require_docker
from .typed_blocks import all_blocks, typed_block

PAGE = REPO_ROOT / "docs" / "operations" / "live-loop.md"
MODEL = "cola-classifier"
IN_DOMAIN = REPO_ROOT / "preprocess" / "data" / "cola" / "in_domain_dev.tsv"
LABEL_NAMES = ("unacceptable", "acceptable")
SHADOW_GAP_S = 0.1  # between requests: several of the shadow worker's 20 ms polls


def page_commands(page: Path = PAGE) -> list[str]:
    """The commands of the page's marked blocks (tests/typed_blocks.py), in page order."""
    blocks = [
        typed_block("live-serve"),
        typed_block("live-feedback"),
        typed_block("live-labels"),
        typed_block("live-monitor"),
        typed_block("live-promote-dry-run"),
        typed_block("live-promote"),
        typed_block("live-nightly"),
    ]
    assert [b.name for b in blocks] == [b.name for b in all_blocks([page])], "the page's blocks changed"
    return [line for block in blocks for line in block.lines]


def typed(prefix: str) -> list[str]:
    found = [command for command in page_commands() if command.startswith(prefix)]
    assert found, f"the page prints no command starting with {prefix!r}"
    return found


def test_every_command_of_the_page_names_what_exists():
    for command in typed("python -m ops.promote_live"):
        words = shlex.split(command.replace("$HOME", "/home/user"))
        args = promote_live.parse_args(words[3:])
        assert args.traffic == "/home/user/sentclf-traffic" and args.feedback == "/home/user/sentclf-labels"
    (monitor,) = typed("mlflow run monitor")
    import yaml

    declared = yaml.safe_load((REPO_ROOT / "monitor" / "MLproject").read_text())["entry_points"]["main"]
    given = {p.split("=")[0] for p in re.findall(r"-P (\S+)", monitor)}
    assert given <= set(declared["parameters"]) and "feedback" in given
    (serve,) = typed("make serve")
    printed = subprocess.run(
        [*shlex.split(serve.replace("$HOME", "/home/user")), "-n"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '--capture-dir "/home/user/sentclf-traffic"' in printed, printed
    assert '--feedback-dir "/home/user/sentclf-labels"' in printed, printed
    assert '--challenger "models:/cola-classifier@challenger" --route "shadow"' in printed, printed
    (retrain,) = typed("RETRAIN_TRAFFIC=")
    assert nightly.LIVE_FEEDBACK_ENV in retrain and retrain.endswith("scripts/retrain.sh")


# ---- end to end --------------------------------------------------------------------------------------------


def cola_rows(count: int) -> tuple[list[str], np.ndarray]:
    rows = [line.split("\t") for line in IN_DOMAIN.read_text().splitlines()][:count]
    return [r[3].strip() for r in rows], np.array([int(r[1]) for r in rows])


@dataclass(frozen=True)
class TwoVersions:
    client: object
    champion: str
    challenger: str


def train_version(store, recipe: str) -> str:
    result = store.shell(
        f"mlflow run . --env-manager local {recipe} -P label_audit=false -P requests_per_level=50 "
        "-P latency_requests=200",
        timeout_s=2400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return str(max(int(v.version) for v in store.client.search_model_versions(f"name='{MODEL}'")))


@pytest.fixture(scope="module")
def two_versions(typed_store):
    """A champion (the store's newest version, or a tiny one) and a challenger trained here on a recipe
    far enough from it that the two disagree on some sentences (two tiny runs answer alike)."""
    require_docker()
    client = typed_store.client
    versions = client.search_model_versions(f"name='{MODEL}'")
    champion = (
        str(max(int(v.version) for v in versions))
        if versions
        else train_version(typed_store, "-P epochs=1 -P max_train_samples=256")
    )
    # 1,024 rows, another seed: on the first 300 in-domain sentences it disagreed with a 256-row version on
    # 260 (2 epochs of 2,048 rows: on 32, with the 20 the test needs), 24 s sooner (AVX2-only EPYC).
    challenger = train_version(typed_store, "-P epochs=1 -P max_train_samples=1024 -P seed=2")
    client.set_registered_model_alias(MODEL, "champion", champion)
    client.set_registered_model_alias(MODEL, "challenger", challenger)
    return TwoVersions(client, champion, challenger)


class ShadowServer:
    """The page's `make serve ... ROUTE=shadow CAPTURE=$HOME/sentclf-traffic` in the background, after the
    page's `mkdir` of that folder (HOME is the test's); stopped with Ctrl-C (SIGINT), as a person stops it,
    so that the server drains its shadow queue and its capture before it exits. It prints its addresses as
    `HTTP     http://127.0.0.1:<port>` and `gRPC     127.0.0.1:<port>` (tools/serve.py)."""

    def __init__(self, store, home: Path) -> None:
        (mkdir,) = typed("mkdir -p $HOME/sentclf-traffic")
        (command,) = typed("make serve")
        assert "CAPTURE=$HOME/sentclf-traffic" in command, command
        home.mkdir(parents=True, exist_ok=True)
        env = store.env | {"HOME": str(home)}
        made = subprocess.run(["bash", "-c", mkdir], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        self.process = background_command(command, env)
        self.http = self.grpc = self.image = None
        deadline = time.monotonic() + 600
        while (self.http is None or self.grpc is None) and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise AssertionError(f"make serve exited {self.process.returncode}")
            if match := re.search(r"^serving .* from (\S+) \(container", line):
                self.image = match[1]
            if match := re.search(r"HTTP\s+http://(127\.0\.0\.1:\d+)", line):
                self.http = match[1]
            if match := re.search(r"gRPC\s+(127\.0\.0\.1:\d+)", line):
                self.grpc = match[1]
        assert self.http and self.grpc, "make serve printed no ports"
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise AssertionError("the server never became ready")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=120)


def send_http(address: str, rid: str, sentences: list[str]) -> dict:
    body = {
        "id": rid,
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(sentences)], "data": sentences}],
    }
    request = urllib.request.Request(
        f"http://{address}/v2/models/cola/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def send_grpc(client, rid: str, sentences: list[str]):
    import tritonclient.grpc as triton

    tensor = triton.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object))
    return client.infer("cola", [tensor], request_id=rid)


def serve_and_send(store, home: Path, sentences: list[str], champion: str) -> dict[tuple[str, int], int]:
    """Every sentence answered in shadow, over HTTP (requests of one to three sentences) and gRPC;
    (request id, position) -> the class the caller got, each response checked to name the champion."""
    import tritonclient.grpc as triton

    server = ShadowServer(store, home)
    served: dict[tuple[str, int], int] = {}
    try:
        grpc = triton.InferenceServerClient(server.grpc)
        start, number = 0, 0
        while start < len(sentences):
            size = 1 + number % 3
            chunk = sentences[start : start + size]
            if number % 3 == 2:
                rid = f"grpc-{number}"
                result = send_grpc(grpc, rid, chunk)
                assert result.get_response().model_version == champion and result.get_response().id == rid
                labels = result.as_numpy("label").tolist()
            else:
                rid = f"http-{number}"
                answer = send_http(server.http, rid, chunk)
                assert answer["model_version"] == champion and answer["id"] == rid, answer
                (output,) = [o for o in answer["outputs"] if o["name"] == "label"]
                labels = output["data"]
            served |= {(rid, i): int(label) for i, label in enumerate(labels)}
            start, number = start + size, number + 1
            # A pause, as between real callers: the server scores shadow copies only while no request is
            # inside it (server/sentclf_server/shadow.py) and drops them otherwise, and this test wants
            # every sentence answered by both versions.
            time.sleep(SHADOW_GAP_S)
        post_feedback_as_typed(server)
    finally:
        server.stop()
    import docker

    assert server.image and "-with-v" in server.image, server.image
    with pytest.raises(docker.errors.ImageNotFound):  # the two-version image goes with the server
        docker.from_env().images.get(server.image)
    (posted,) = (home / "sentclf-labels").glob("feedback-*.jsonl")
    assert json.loads(posted.read_text())["id"] == "order-1234"
    return served


def post_feedback_as_typed(server: ShadowServer) -> None:
    """The page's curl to the feedback endpoint of the server `make serve ... FEEDBACK=` started (its HTTP
    port is the test's, not 8000)."""
    (command,) = typed("curl")
    answer = subprocess.run(
        ["bash", "-c", command.replace("127.0.0.1:8000", server.http)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert answer.returncode == 0 and json.loads(answer.stdout) == {"accepted": 1}, answer


def captured(folder: Path) -> dict[str, dict[tuple[str, int], dict]]:
    """version -> (request id, position) -> the capture record."""
    out: dict[str, dict] = {}
    for path in sorted(folder.glob("capture-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            out.setdefault(record["version"], {})[(record["id"], record.get("index", 0))] = record
    return out


def write_labels(folder: Path, labels: dict[tuple[str, int], int]) -> None:
    for path in folder.glob("*"):
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{rid},{index},{LABEL_NAMES[label]}\n" for (rid, index), label in sorted(labels.items()))
    (folder / "labels.csv").write_text("id,index,label\n" + rows)


def run_typed(store, home: Path, command: str, timeout_s: float = 900) -> str:
    result = store.shell(
        command.replace("$HOME", str(home)), timeout_s=timeout_s, env=store.env | {"HOME": str(home)}
    )
    assert result.returncode == 0, command + "\n" + result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout + result.stderr


@pytest.mark.docker
@pytest.mark.e2e
def test_two_versions_in_shadow_are_judged_on_live_traffic_and_the_better_one_promoted(
    typed_store, two_versions, tmp_path
):
    client, a, b = two_versions.client, two_versions.champion, two_versions.challenger
    home = tmp_path / "home"
    sentences, truth = cola_rows(300)
    served = serve_and_send(typed_store, home, sentences, a)
    assert len(served) == 300
    answers = captured(home / "sentclf-traffic")
    keys = sorted(served)
    assert set(answers) == {a, b} and set(answers[a]) == set(keys)
    # Shadow work is dropped (and counted) rather than ever slowing a caller: most sentences, not all, get a
    # shadow answer; the paired figures are over those both versions answered.
    both = [k for k in keys if k in answers[b]]
    assert set(answers[b]) <= set(keys) and len(both) >= 0.8 * len(keys), len(both)
    assert all(answers[a][k]["served"] and answers[a][k]["route"] == "champion" for k in keys)
    assert all(not answers[b][k]["served"] and answers[b][k]["route"] == "shadow" for k in both)
    order = sorted(keys, key=lambda k: (int(k[0].split("-")[1]), k[1]))  # the order the sentences went out
    label_of = {key: int(truth[n]) for n, key in enumerate(order)}
    assert len(label_of) == 300

    # The monitor, as printed, with the true labels.
    labels_dir = home / "sentclf-labels"
    write_labels(labels_dir, label_of)
    ensured = typed_store.shell("python -m conductor.step_image ensure-step", timeout_s=900)
    assert ensured.returncode == 0, ensured.stderr[-3000:]
    started = time.time() * 1000
    run_typed(typed_store, home, typed("mlflow run monitor")[0])
    (run,) = [
        r
        for r in typed_store.runs()
        if r.data.tags.get("sentclf.step") == "monitor" and r.info.start_time >= started
    ]
    y = np.array([label_of[k] for k in keys])
    champion_answers = np.array([served[k] for k in keys])
    y_both = np.array([label_of[k] for k in both])
    challenger_answers = np.array([answers[b][k]["label"] for k in both])
    assert run.data.metrics[f"live_v{a}_mcc"] == pytest.approx(matthews_corrcoef(y, champion_answers))
    assert run.data.metrics[f"live_v{b}_mcc"] == pytest.approx(matthews_corrcoef(y_both, challenger_answers))
    assert (run.data.metrics[f"live_v{a}_labels"], run.data.metrics[f"live_v{b}_labels"]) == (300, len(both))
    for version in (a, b):
        model_id = client.get_model_version(MODEL, version).source.removeprefix("models:/")
        metrics = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
        assert metrics["live_mcc"] == run.data.metrics[f"live_v{version}_mcc"]
    report = Path(client.download_artifacts(run.info.run_id, "monitor/report.html", str(tmp_path)))
    assert "Versions on live traffic" in report.read_text()

    # The promotion, as printed: labels that side with the challenger where the versions disagree.
    champion_on_both = np.array([served[k] for k in both])
    disagree = int((champion_on_both != challenger_answers).sum())
    assert disagree >= 20, f"the two versions disagree on only {disagree} of {len(both)} sentences"
    dry_run, promote = typed("python -m ops.promote_live")
    write_labels(labels_dir, {k: answers[b][k]["label"] for k in both})
    out = run_typed(typed_store, home, dry_run)
    assert "(dry run: no alias moved)" in out
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == a
    out = run_typed(typed_store, home, promote)
    paired = f"v{b} against champion v{a} on {len(both)} labelled live requests"
    assert f"live promotion: promoted ({paired}" in out, out
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == b

    # ... and keeps the challenger when the labels side with the champion.
    client.set_registered_model_alias(MODEL, "champion", a)
    write_labels(labels_dir, {k: served[k] for k in both})
    out = run_typed(typed_store, home, promote)
    assert f"live promotion: kept ({paired}" in out, out
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == a
