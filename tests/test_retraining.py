"""Nightly retraining as a team leaves it running: their data in a folder outside the repository, a real
cron daemon firing the installed entry, a manual `make run` during the scheduled one, bad batches, and
server images that neither collide nor pile up. Real store and registry, real containers, real cron."""

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import docker
import mlflow
import pandas as pd
import pytest

from conductor.image_gc import collect_server_images
from sentclf.contract import STEP_TAG
from sentclf.engine import containers_where
from sentclf.server_images import image_labels, image_namespace

from .conftest import REPO_ROOT, TypedStore, ours, require_docker
from .test_commands_as_typed import leftover_containers, output, typed

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

COLA = REPO_ROOT / "preprocess" / "data" / "cola" / "in_domain_train.tsv"
TINY = (
    "-P epochs=1 -P max_train_samples=128 -P label_audit=false -P requests_per_level=50"
    " -P latency_requests=200"
)
COLUMNS = "-P text_column=text -P label_column=y"


@pytest.fixture(scope="module")
def labels_folder(tmp_path_factory) -> Path:
    """Where a team's labelling job drops batches: two CSV batches and a held-out test file, outside
    the repository, with the team's own column names."""
    folder = tmp_path_factory.mktemp("labels")
    cola = pd.read_csv(COLA, sep="\t", header=None, names=["source", "y", "note", "text"], quoting=3)
    cola = cola.sample(n=900, random_state=0)[["text", "y"]]
    cola.iloc[:400].to_csv(folder / "batch-2026-11-01.csv", index=False)
    cola.iloc[400:750].to_csv(folder / "batch-2026-11-02.csv", index=False)
    cola.iloc[750:].to_csv(folder / "test.csv", index=False)
    return folder


def test_a_folder_of_batches_outside_the_repository_trains(typed_store, labels_folder, tmp_path):
    command = f"{typed('mlflow run .')} -P dataset={labels_folder} {COLUMNS} {TINY} -P use_cache=false"
    result = typed_store.shell(command)
    assert result.returncode == 0, output(result)
    parent = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags][-1]
    client = typed_store.client
    manifest = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "dataset/manifest.json", str(tmp_path))
        ).read_text()
    )
    assert manifest["source"] == str(labels_folder) and len(manifest["files"]) == 3
    snapshot = {a.path for a in client.list_artifacts(parent.info.run_id, "dataset/files")}
    assert snapshot == {f"dataset/files/{f['name']}" for f in manifest["files"]}
    preprocess = client.get_run(parent.data.tags["run_id.preprocess"])
    assert preprocess.data.tags["input.dataset"] == str(labels_folder)
    assert preprocess.data.tags["input.dataset_sha256"] == manifest["sha256"]
    assert preprocess.data.metrics["test_rows"] == 150  # the held-out file, not a fraction of the batches
    assert preprocess.data.metrics["train_rows"] + preprocess.data.metrics["validation_rows"] == 750
    assert client.get_run(parent.data.tags["run_id.train"]).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"text,y\nThe cat sat.,1\nThe dog ran.,maybe\n",
            r"bad.csv, column y, row\(s\) \d: the label column mixes 1 number\(s\) .* and 1 name\(s\)",
        ),
        (b"text,y\nThe cat sat.,1\n   ,0\n", r"bad.csv, column text, row\(s\) 2: text is empty"),
        (b"text,y\nThe cat sat.,1\nbad \xff byte,0\n", r"bad.csv: line 3 is not valid UTF-8 \(byte 0xff\)"),
    ],
    ids=["bad-label", "blank-text", "not-utf8"],
)
def test_a_bad_file_outside_the_repository_is_rejected_by_file_row_and_column(
    typed_store, tmp_path, content, message
):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "bad.csv").write_bytes(content)
    result = typed_store.shell(f"{typed('mlflow run preprocess')} -P dataset={folder / 'bad.csv'} {COLUMNS}")
    assert result.returncode != 0
    assert re.search(message, output(result)), output(result)
    assert str(folder / "bad.csv") in output(result)  # the host's own path, not the container's
    run = typed_store.runs()[-1]
    assert run.info.status == "FAILED"
    assert not typed_store.client.list_artifacts(run.info.run_id, "data")  # nothing logged as data


# ---- the schedule -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def crontab_kept_aside():
    """The machine's crontab and cron daemon as they were before the test, restored after it."""
    saved = (
        subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
        if shutil.which("crontab")
        else None
    )
    cron_was_running = subprocess.run(["pgrep", "-x", "cron"], capture_output=True).returncode == 0
    try:
        yield
    finally:
        if shutil.which("crontab"):
            previous = saved.stdout if saved is not None and saved.returncode == 0 else ""
            subprocess.run(["crontab", "-"], input=previous, text=True, check=False)
        if not cron_was_running:
            subprocess.run(["pkill", "-x", "cron"], check=False)


def wait_until(condition, what: str, timeout_s: float, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(poll_s)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s")


def test_the_cron_entry_fires_and_a_manual_run_waits_for_it(typed_store: TypedStore, labels_folder):
    require_docker()
    logs = REPO_ROOT / ".build" / f"test-retrain-logs-{uuid.uuid4().hex[:8]}"
    arguments = f"-P dataset={labels_folder} {COLUMNS} {TINY}"
    env = typed_store.env | {"RETRAIN_LOG_DIR": str(logs), "RETRAIN_KEEP_LOGS": "2", "SCHEDULE": "* * * * *"}
    marker = f"# sentclf-retrain {REPO_ROOT}"
    make = ["make", "--no-print-directory"]
    with crontab_kept_aside():
        try:
            for _ in range(2):  # idempotent
                installed = subprocess.run(
                    [*make, "cron-install", f"RETRAIN_ARGS={arguments}"],
                    cwd=REPO_ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert installed.returncode == 0, installed.stdout + installed.stderr
            entries = [
                line
                for line in subprocess.run(
                    ["crontab", "-l"], capture_output=True, text=True
                ).stdout.splitlines()
                if marker in line
            ]
            assert len(entries) == 1 and entries[0].startswith("* * * * * ")
            assert subprocess.run(["pgrep", "-x", "cron"], capture_output=True).returncode == 0

            # The real cron daemon fires the entry within a minute; the retrain then holds the lock.
            first = wait_until(lambda: sorted(logs.glob("retrain-2*.log")), "cron firing the entry", 90)[0]
            subprocess.run([*make, "cron-remove"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
            subprocess.run([*make, "cron-remove"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
            assert marker not in subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
            lock = REPO_ROOT / ".build" / "pipeline.lock"
            wait_until(
                lambda: "scripts/retrain.sh" in lock.read_text(), "the retrain taking the lock", 60, 0.2
            )

            # A second scheduled retrain gives up at once: 75, and its log says why.
            skipped = subprocess.run(
                ["scripts/retrain.sh", *arguments.split()],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert skipped.returncode == 75
            # A manual run waits for the lock, then succeeds (reusing what the retrain just made).
            manual = subprocess.Popen(
                [*make, "run", f"ARGS={arguments}"],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            manual_output, _ = manual.communicate(timeout=1200)
            assert manual.returncode == 0, manual_output[-4000:]
            assert "waiting for it to finish" in manual_output
            assert "database is locked" not in manual_output

            log = first.read_text()
            last = log.strip().splitlines()[-1]
            assert re.fullmatch(
                r"retrain \d{8}T\d{6}Z: exit 0: version \d+, test MCC -?\d\.\d{4} \[.*\], "
                r"(promoted|kept) \(.*\)",
                last,
            ), log[-3000:]
            assert "database is locked" not in log

            # Retention: a third retrain (everything cached now) leaves the newest two logs.
            again = subprocess.run(
                ["scripts/retrain.sh", *arguments.split()],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert again.returncode == 0
            kept = sorted(logs.glob("retrain-2*.log"))
            shown = {p.name: p.read_text().strip().splitlines()[-1] for p in kept}
            assert len(kept) == 2 and first not in kept, (shown, again.stdout, skipped.stdout)
            latest = (logs / "retrain-latest.log").resolve()
            assert latest == kept[-1] and "exit 0" in latest.read_text().splitlines()[-1]
            assert "reusing run" in latest.read_text()
        finally:
            shutil.rmtree(logs, ignore_errors=True)
    assert leftover_containers() == []


def test_two_retrains_of_one_second_keep_their_order_and_retention_keeps_the_newer(tmp_path):
    """A scheduled retrain and one skipped while it runs often start in the same second: their logs are told
    apart by the pid, padded so that the names sort as the retrains started. (Unpadded, a skipped retrain of
    pid 1042 sorted before the scheduled one of pid 979, and retention pruned the newer log.)"""
    logs = tmp_path / "logs"
    env = {**os.environ, "RETRAIN_LOG_DIR": str(logs), "RETRAIN_KEEP_LOGS": "1"}
    lock = REPO_ROOT / ".build" / "pipeline.lock"
    lock.parent.mkdir(exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another pipeline runs: both retrains skip
        try:
            skipped = []
            for _ in range(2):
                process = subprocess.Popen(["scripts/retrain.sh"], cwd=REPO_ROOT, env=env)
                assert process.wait(timeout=60) == 75
                skipped.append(process.pid)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    (kept,) = logs.glob("retrain-2*.log")
    assert re.fullmatch(rf"retrain-\d{{8}}T\d{{6}}Z-{skipped[1]:07d}\.log", kept.name), (kept.name, skipped)
    assert kept.read_text().splitlines()[-1].endswith("exit 75: skipped: another pipeline is running")


# ---- images -----------------------------------------------------------------------------------------------


def test_old_server_images_are_collected_and_kept_ones_stay(tracking_store, tmp_path):
    """Six versions, each with an image: the champion, the challenger and the newest two stay."""
    require_docker()
    engine = docker.from_env()
    client = mlflow.MlflowClient()
    client.create_registered_model("collected")
    versions = []
    for _ in range(6):
        with mlflow.start_run() as run:
            mlflow.log_text("x", "model/MLmodel")
        versions.append(
            client.create_model_version(
                "collected", f"runs:/{run.info.run_id}/model", run.info.run_id
            ).version
        )
    client.set_registered_model_alias("collected", "champion", "1")
    client.set_registered_model_alias("collected", "challenger", "3")
    namespace = image_namespace("collected")
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM sentclf/python-base:3.11-bookworm\nLABEL sentclf.test=gc\n")
    containers_before = {c.id for c in containers_where(engine) if ours(c.labels)}
    dangling_before = {i.id for i in engine.images.list(filters={"dangling": True}) if ours(i.labels)}
    tags = {}
    for version in map(str, versions):
        tag = f"collected-server:{version}-{uuid.uuid4().hex[:12]}"
        engine.images.build(  # rm: docker-py keeps the intermediate containers otherwise
            path=str(context),
            tag=tag,
            labels=image_labels("collected", version, namespace),
            rm=True,
            forcerm=True,
        )
        client.set_model_version_tag("collected", version, "server_image", tag)
        tags[version] = tag
    try:
        removed = collect_server_images(engine, "collected", keep=2)
        assert sorted(removed) == sorted(tags[v] for v in ("2", "4"))
        remaining = {t for image in engine.images.list(name="collected-server") for t in image.tags}
        assert remaining == {tags[v] for v in ("1", "3", "5", "6")}
    finally:
        for tag in tags.values():
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(tag, force=True)
    # No build container, no dangling image left (another checkout's, labelled, are not counted).
    assert {c.id for c in containers_where(engine) if ours(c.labels)} <= containers_before
    assert {i.id for i in engine.images.list(filters={"dangling": True}) if ours(i.labels)} <= dangling_before


def test_a_second_store_never_retags_the_first_ones_image(tracking_store):
    """Two stores (two clones, or a store wiped and begun again) both have a version 1: their image tags
    differ, because each registered model carries its own image namespace."""
    mlflow.MlflowClient().create_registered_model("twice")
    first = image_namespace("twice")
    assert image_namespace("twice") == first  # stable within a store
    mlflow.MlflowClient().delete_registered_model("twice")
    mlflow.MlflowClient().create_registered_model("twice")  # the store begun again
    assert image_namespace("twice") != first


def test_nothing_of_the_retraining_tests_is_left(typed_store):
    assert leftover_containers() == []
    parents = [r for r in typed_store.runs() if "mlflow.parentRunId" not in r.data.tags]
    assert all(r.info.status != "RUNNING" for r in parents)
    assert all(r.info.status != "RUNNING" for r in typed_store.runs() if r.data.tags.get(STEP_TAG))
    assert os.listdir(typed_store.env["TMPDIR"]) == []
