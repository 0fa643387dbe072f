"""The nightly loop left alone: it tells someone (Apprise, to a real HTTP receiver and a real SMTP server on
127.0.0.1), retries what is transient, stops what runs past its time limit, notices missed nights, and
writes a model card for every version it registers. Real store, registry, containers and cron; tiny
pipelines that the step cache makes seconds long after the first."""

import contextlib
import datetime
import fcntl
import json
import re
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from sentclf.contract import STEP_TAG

from .conftest import REPO_ROOT, TypedStore, require_docker
from .test_commands_as_typed import leftover_containers
from .test_retraining import COLA, crontab_kept_aside
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

MODEL = f"nightly-{uuid.uuid4().hex[:6]}"  # a registered model of its own: its first version is promoted
TINY = (
    f"-P epochs=1 -P max_train_samples=64 -P registered_model_name={MODEL} -P min_mcc=-1 -P label_audit=false"
    " -P requests_per_level=50 -P latency_requests=200"
)
COLUMNS = "-P text_column=text -P label_column=y"
TIMINGS: dict[str, float] = {}


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that keeps the JSON bodies posted to it (Apprise's json://)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def mailbox():
    """A real SMTP server (aiosmtpd) on 127.0.0.1; yields (Apprise mailto URL, received messages)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    messages = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's API
            messages.append(envelope)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield f"mailto://127.0.0.1:{port}?from=retrain@example.com&to=ops@example.com&mode=insecure", messages
    controller.stop()


@pytest.fixture(scope="module")
def night_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nightly-labels")
    cola = pd.read_csv(COLA, sep="\t", header=None, names=["source", "y", "note", "text"], quoting=3)
    cola = cola.sample(n=400, random_state=1)[["text", "y"]]
    cola.iloc[:300].to_csv(folder / "batch.csv", index=False)
    cola.iloc[300:].to_csv(folder / "test.csv", index=False)
    return folder


def retrain(store: TypedStore, logs: Path, args: str, timeout_s: float = 1200, **env: str):
    """scripts/retrain.sh as cron runs it, with RETRAIN_* settings; (result, seconds, its log)."""
    started = time.monotonic()
    result = subprocess.run(
        ["scripts/retrain.sh", *args.split()],
        cwd=REPO_ROOT,
        env=store.env | {"RETRAIN_LOG_DIR": str(logs)} | env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    log = (logs / "retrain-latest.log").read_text()
    return result, time.monotonic() - started, log


def our_containers() -> list:
    """Step and server containers of this checkout (the engine is shared with other checkouts)."""
    return [
        c
        for c in leftover_containers()
        if any(str(REPO_ROOT) in m.get("Source", "") for m in c.attrs["Mounts"])
    ]


def summary_line(log: str) -> str:
    return log.strip().splitlines()[-1]


def test_a_failing_night_notifies_by_json_and_mail_once(typed_store, tmp_path, receiver, mailbox):
    """Bad data is permanent: one attempt, exit non-zero, and both receivers get the summary line, the
    failing step and the log's tail. The URLs are secrets: the log shows them masked, MLflow not at all."""
    require_docker()
    mail_url, mails = mailbox
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "bad.csv").write_text("text,y\nThe cat sat.,1\nThe dog ran.,maybe\n")
    secret_url = receiver.url + "?token=s3cr3t-token"
    result, seconds, log = retrain(
        typed_store,
        tmp_path / "logs",
        f"-P dataset={folder} {COLUMNS} {TINY}",
        RETRAIN_NOTIFY=f"{secret_url} {mail_url}",
        RETRAIN_BACKOFF="1",
    )
    TIMINGS["failing night (bad data), seconds"] = round(seconds, 1)
    assert result.returncode not in (0, 75, 124), log[-3000:]
    line = summary_line(log)
    assert re.match(r"retrain \d{8}T\d{6}Z: exit \d+: failed: .*\(attempt 1 of 3\)$", line), line
    assert "attempt 2 of 3" not in log  # permanent: not retried
    assert len(receiver.received) == 1, log[-3000:]
    message = receiver.received[0]
    assert "failed" in message["title"]
    assert line in message["message"] and "failing step: preprocess" in message["message"]
    assert "the label column mixes" in message["message"]  # the log's tail
    assert len(mails) == 1 and mails[0].rcpt_tos == ["ops@example.com"]
    assert b"failing step: preprocess" in mails[0].content
    assert "s3cr3t-token" not in log
    parent = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]
    recorded = json.dumps([parent.data.params, parent.data.tags])
    assert "s3cr3t" not in recorded and "127.0.0.1" not in json.dumps(parent.data.params)


def test_a_promotion_notifies_and_the_version_has_a_model_card(typed_store, tmp_path, receiver, night_folder):
    require_docker()
    args = f"-P dataset={night_folder} {COLUMNS} {TINY}"
    result, seconds, log = retrain(typed_store, tmp_path / "logs", args, RETRAIN_NOTIFY=receiver.url)
    TIMINGS["promoting night (tiny, from scratch), seconds"] = round(seconds, 1)
    assert result.returncode == 0, log[-4000:]
    assert re.search(r"promoted .*\(attempt 1 of 3\)$", summary_line(log)), summary_line(log)
    assert [m["title"] for m in receiver.received] == [receiver.received[0]["title"]]
    assert "promoted" in receiver.received[0]["title"]
    assert summary_line(log) in receiver.received[0]["message"]

    # The card: the version's description in the registry, and the evaluate run's model_card.md.
    client = typed_store.client
    version = client.get_model_version_by_alias(MODEL, "champion")
    card = version.description
    evaluate = [r for r in typed_store.runs() if r.data.tags.get(STEP_TAG) == "evaluate"][-1]
    assert evaluate.data.tags["input.model_version"] == str(version.version)
    artifact = Path(client.download_artifacts(evaluate.info.run_id, "model_card.md", str(tmp_path)))
    assert artifact.read_text() == card
    for heading in ("## Data", "## Recipe", "## Metrics", "## Limits", "## Gate"):
        assert heading in card, card
    preprocess = client.get_run(evaluate.data.tags["input.data_run_id"])
    assert preprocess.data.tags["input.dataset_sha256"] in card
    assert "`batch.csv`" in card and "`test.csv`" in card  # each snapshot file with its hash
    train = client.get_run(version.run_id)
    assert f"| `epochs` | `{train.data.params['epochs']}` |" in card
    assert train.data.tags["mlflow.source.git.commit"] in card
    assert "label set: 0 = `unacceptable`, 1 = `acceptable`" in card or "label set: 0 = `0`" in card
    metrics = evaluate.data.metrics
    for name in ("test_mcc", "test_accuracy", "test_f1_macro", "test_f1_weighted"):
        low, high = metrics[f"{name}_low"], metrics[f"{name}_high"]
        shown = f"(`{name}`) | {metrics[name]:.4f} | [{low:.4f}, {high:.4f}] |"
        assert shown in card, (shown, card)
    rows = re.search(r"^(\d+) test rows, \d+ resamples", card, re.M)
    assert rows and int(rows.group(1)) == preprocess.data.metrics["test_rows"]
    assert "decision: promoted" in card and "floor passed" in card


def test_an_engine_down_for_the_first_attempt_succeeds_on_the_second(typed_store, tmp_path, night_folder):
    """The first attempt's DOCKER_HOST is a socket path nothing listens on, as when the engine is stopped
    (the test hook SENTCLF_TEST_FIRST_ATTEMPT_DOCKER_HOST, which the retry wrapper honours for attempt 1
    only): the real dockerd of this shared machine is left running. The failure is classified as
    `engine_unreachable`, transient, and the second attempt (everything cached) succeeds."""
    require_docker()
    nowhere = f"unix://{tmp_path}/stopped-engine.sock"
    result, seconds, log = retrain(
        typed_store,
        tmp_path / "logs",
        f"-P dataset={night_folder} {COLUMNS} {TINY}",
        SENTCLF_TEST_FIRST_ATTEMPT_DOCKER_HOST=nowhere,
        RETRAIN_BACKOFF="1",
    )
    TIMINGS["engine down for attempt 1, then cached night: seconds"] = round(seconds, 1)
    assert result.returncode == 0, log[-4000:]
    assert re.search(r"attempt 1 of 3 ended: exit \d+ after .*\(engine_unreachable\)", log), log[-4000:]
    assert "retrying in 1s" in log and "attempt 2 of 3 started" in log
    assert summary_line(log).endswith("(attempt 2 of 3)"), summary_line(log)


def test_a_night_past_its_time_limit_is_cancelled_with_nothing_left(typed_store, tmp_path, receiver):
    """The train step runs (real training on all rows, use_cache=false; it starts about 15 s in) past
    RETRAIN_TIMEOUT=30s: exit 124, the step's containers gone, no version registered, the lock free, and a
    notification."""
    require_docker()
    model = f"nightly-timeout-{uuid.uuid4().hex[:6]}"
    args = f"-P epochs=50 -P use_cache=false -P label_audit=false -P registered_model_name={model}"
    result, seconds, log = retrain(
        typed_store, tmp_path / "logs", args, RETRAIN_TIMEOUT="30s", RETRAIN_NOTIFY=receiver.url
    )
    TIMINGS["RETRAIN_TIMEOUT=30s: seconds until retrain.sh exited"] = round(seconds, 1)
    (tmp_path.parent / "timeout-night.log").write_text(log)
    assert result.returncode == 124, log[-4000:]
    assert "exit 124: timed out after 30s (RETRAIN_TIMEOUT)" in summary_line(log)
    assert our_containers() == []
    assert typed_store.client.search_model_versions(f"name = '{model}'") == []
    with (REPO_ROOT / ".build" / "pipeline.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises if anything still holds it
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert any("timed out" in m["title"] for m in receiver.received)
    parent = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]
    assert parent.info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in typed_store.runs())


def write_night_log(logs: Path, when: datetime.datetime, line: str) -> Path:
    stamp = when.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = logs / f"retrain-{stamp}-1.log"
    path.write_text(f"...\nretrain {stamp}: exit 0: {line}\n")
    return path


def test_retrain_status_flags_an_overdue_night_and_the_next_one_counts_the_missed(
    typed_store, tmp_path, receiver, night_folder
):
    require_docker()
    logs = tmp_path / "logs"
    logs.mkdir()
    now = datetime.datetime.now().astimezone()
    hour = (now.hour + 12) % 24  # due daily, never while this test runs
    write_night_log(logs, now - datetime.timedelta(days=3, hours=1), "version 1, kept (old night)")
    env = typed_store.env | {"RETRAIN_LOG_DIR": str(logs), "SCHEDULE": f"0 {hour} * * *"}
    with crontab_kept_aside():
        # The docs' lines as printed (docs/operations/retraining.md), on this test's folder.
        retraining = typed_block("retraining")
        install = retraining.line("make cron-install").replace("/srv/labels", str(night_folder))
        installed = typed_store.shell(install, env=env, timeout_s=300)
        status_command = typed_block("retrain-status").line("make retrain-status")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        try:
            status = typed_store.shell(status_command, env=env, timeout_s=120)
            assert status.returncode != 0, status.stdout + status.stderr
            assert f"schedule: 0 {hour} * * *" in status.stdout
            assert "version 1, kept (old night)" in status.stdout and "next due:" in status.stdout
            assert re.search(r"WARNING: overdue: .*\(3 night\(s\) missed", status.stdout), status.stdout

            # The next night says how many were missed.
            result, _, log = retrain(
                typed_store,
                logs,
                f"-P dataset={night_folder} {COLUMNS} {TINY}",
                RETRAIN_NOTIFY=receiver.url,
                RETRAIN_NOTIFY_ON="all",
            )
            assert result.returncode == 0, log[-3000:]
            assert "missed nights: 3 scheduled night(s)" in receiver.received[-1]["message"]
            again = typed_store.shell(status_command, env=env, timeout_s=120)
            assert again.returncode == 0 and "WARNING" not in again.stdout, again.stdout
        finally:
            typed_store.shell(retraining.line("make cron-remove"), env=env, timeout_s=120)


def test_nothing_of_the_nightly_tests_is_left(typed_store):
    assert our_containers() == []
    assert all(r.info.status != "RUNNING" for r in typed_store.runs())
    assert not (REPO_ROOT / ".build" / "retrain-notify").exists()
    with contextlib.suppress(FileNotFoundError):
        (REPO_ROOT / "test-output").mkdir(exist_ok=True)
        (REPO_ROOT / "test-output" / "nightly.json").write_text(json.dumps(TIMINGS, indent=2))
