"""`mlflow ui` as typed, looked at in a real browser (headless Chromium through chromium-driver) after a
tiny pipeline run: the link `make ui` prints lands on the pipeline's runs, the parent lists its four named
children, the train run shows its metrics and its confusion matrix, and the evaluate run's HTML report
opens in the artifact viewer. The screenshots are kept in test-output/ui/."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conductor.ui_links import run_link, runs_link
from sentclf.contract import STEP_TAG

from .browser import headless_chromium
from .browser import wait_for as browser_wait_for
from .conftest import REPO_ROOT, TEST_OUTPUT, UNDER_CI
from .test_commands_as_typed import run_typed

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

SHOTS = TEST_OUTPUT / "ui"
STEPS = ("preprocess", "train", "building", "evaluate")


def browser_available() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


@pytest.fixture(scope="module")
def pipeline(typed_store):
    """The newest finished pipeline of the as-typed store that ran all four steps itself (a parent whose
    steps came from the cache has no children to expand); run as typed here if there is none."""
    if not browser_available():
        if UNDER_CI:
            pytest.fail("CI=true but no chromium/chromedriver: `make test` installs them (make browser)")
        pytest.skip("no chromium/chromedriver (make browser installs them)")

    def finished_parents():
        return [
            r
            for r in typed_store.runs()
            if "mlflow.parentRunId" not in r.data.tags
            and r.info.status == "FINISHED"
            and all(r.data.tags.get(f"cache.{step}") == "ran" for step in STEPS)  # four children of its own
        ]

    if not finished_parents():
        result = run_typed(typed_store, "mlflow run .")  # TINY turns the cache off
        assert result.returncode == 0, result.stderr[-5000:]
    parent = finished_parents()[-1]
    children = {
        r.data.tags[STEP_TAG]: r
        for r in typed_store.runs()
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


@pytest.fixture(scope="module")
def ui(typed_store):
    """`mlflow ui` as typed (a free port added), in the user's activated shell; stopped afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        ["bash", "-c", f"source .venv/bin/activate && exec mlflow ui --port {port}"],
        cwd=REPO_ROOT,
        env=typed_store.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{address}/health", timeout=2)
            break
        except OSError:
            assert process.poll() is None, "mlflow ui exited"
            assert time.monotonic() < deadline, "mlflow ui did not answer within 120 s"
            time.sleep(0.5)
    yield address
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(SHOTS, width=1400) as driver:
        yield driver


def wait_for(browser, condition, what: str, timeout_s: float = 60):
    return browser_wait_for(browser, condition, what, SHOTS, timeout_s, poll_s=0.5)


def texts(browser, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in browser.find_elements(By.CSS_SELECTOR, css)]


def test_the_link_make_ui_prints_shows_the_pipeline_and_its_four_children(ui, browser, pipeline, typed_store):
    from selenium.webdriver.common.by import By

    parent, _ = pipeline
    printed = subprocess.run(
        ["bash", "-c", f"source .venv/bin/activate && python -m conductor.ui_links {ui}"],
        cwd=REPO_ROOT,
        env=typed_store.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    link = runs_link(ui, typed_store.experiment_id)
    assert link in printed
    browser.get(link)
    # By its id: runs of the same data and parameters share a name (the version and decision tell them apart).
    name_cell = wait_for(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, f"a[href*='{parent.info.run_id}']").find_element(
            By.XPATH, "./ancestor::*[@role='gridcell'][1]"
        ),
        "the pipeline run",
    )
    assert parent.info.run_name in name_cell.text
    assert "Overview" not in texts(browser, "h2")  # not the GenAI overview
    name_cell.find_element(By.CSS_SELECTOR, "button").click()  # expand the parent's children
    wait_for(browser, lambda b: set(STEPS) <= set(texts(b, "a span")), "the four children")
    browser.save_screenshot(str(SHOTS / "runs.png"))


def test_the_train_run_shows_its_metrics_and_its_confusion_matrix(ui, browser, pipeline, typed_store):

    _, children = pipeline
    train = children["train"]
    browser.get(run_link(ui, typed_store.experiment_id, train.info.run_id))
    wait_for(
        browser, lambda b: "val_mcc" in b.page_source and "parity_max_abs_diff" in b.page_source, "metrics"
    )
    browser.save_screenshot(str(SHOTS / "train-run.png"))
    browser.get(run_link(ui, typed_store.experiment_id, train.info.run_id, "evaluation/confusion_matrix.png"))
    # The viewer loads the file through its own URL: look for the figure itself, loaded and full size.
    wait_for(
        browser,
        lambda b: (
            "evaluation/confusion_matrix.png" in b.page_source
            and b.execute_script("return [...document.images].some(i => i.complete && i.naturalWidth >= 300)")
        ),
        "the confusion matrix image",
    )
    browser.save_screenshot(str(SHOTS / "train-confusion-matrix.png"))


def test_the_evaluate_report_opens_in_the_artifact_viewer(ui, browser, pipeline, typed_store):
    from selenium.webdriver.common.by import By

    _, children = pipeline
    evaluate = children["evaluate"]
    browser.get(run_link(ui, typed_store.experiment_id, evaluate.info.run_id, "evaluation/report.html"))
    frame = wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "iframe"), "the report's frame")
    browser.switch_to.frame(frame)
    try:
        heading = wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "h1").text, "the report")
        assert heading.startswith("cola-classifier version")
        body = browser.find_element(By.CSS_SELECTOR, "body").text
        assert "The gate" in body and "parity" in body.lower() and "concurrency" in body
        loaded = browser.execute_script(
            "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
        )
        # confusion matrix, latency histogram, load curve and the slices' figure, all embedded
        assert loaded == 4
    finally:
        browser.switch_to.default_content()
    browser.save_screenshot(str(SHOTS / "evaluate-report.png"))


def test_the_versions_model_card_shows_on_its_registry_page(ui, browser, pipeline, typed_store):
    """The evaluate step's model card is the version's description, rendered on the version's page."""
    _, children = pipeline
    evaluate = children["evaluate"]
    version = evaluate.data.tags["input.model_version"]
    browser.get(f"{ui}/#/models/cola-classifier/versions/{version}")
    wait_for(
        browser,
        lambda b: (
            f"Model card: cola-classifier version {version}" in b.page_source
            and "Gate decision" in b.page_source
            and "Limits" in b.page_source
        ),
        "the model card",
    )
    browser.save_screenshot(str(SHOTS / "model-card.png"))
