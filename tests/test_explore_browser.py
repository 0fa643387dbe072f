"""The what-if page (make explore) in a real browser: headless Chromium types a sentence, presses Explain
and reads back the predicted class, the word attributions and both lists of neighbours; then an empty text
gets a message. It runs on the server tests' tiny fake model (tests/server/conftest.py) with a few training
sentences, served by tools.explore's own app under uvicorn on a loopback port. Screenshots are kept in
test-output/explore/."""

import shutil
import socket
import threading
import time

import pytest

from tests.server.conftest import make_model_dir
from tools.explore import Explorer, app

from .browser import headless_chromium
from .browser import wait_for as browser_wait_for
from .conftest import TEST_OUTPUT, UNDER_CI

SHOTS = TEST_OUTPUT / "explore"
TRAINING = [
    ("the cat sat on the mat", 1),
    ("the dog ran on the mat", 1),
    ("colorless green ideas sleep furiously", 0),
    ("we read the book quickly", 1),
    ("it was very bad", 0),
    ("she reads slowly", 1),
]


def free_port(first: int = 19500, last: int = 19999) -> int:
    """A free loopback port of the range this test may use."""
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page's URL, served in a thread of this process."""
    import uvicorn

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if UNDER_CI:
            pytest.fail("CI=true but no chromium/chromedriver: `make test` installs them (make browser)")
        pytest.skip("no chromium/chromedriver (make browser installs them)")
    texts, labels = zip(*TRAINING, strict=True)
    explorer = Explorer(
        make_model_dir(tmp_path_factory.mktemp("model")), list(texts), list(labels), "fake v1"
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app(explorer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the page's server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(SHOTS, width=1200) as driver:
        yield driver


def wait_for(browser, condition, what: str, timeout_s: float = 30):
    return browser_wait_for(browser, condition, what, SHOTS, timeout_s, poll_s=0.2)


def test_a_typed_sentence_shows_its_class_words_and_neighbours(page, browser):
    from selenium.webdriver.common.by import By

    browser.get(page)
    wait_for(browser, lambda b: "fake v1" in b.find_element(By.ID, "model").text, "the model's name")
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys("the dog sat on the mat")
    browser.find_element(By.ID, "explain").click()
    label = wait_for(browser, lambda b: b.find_element(By.ID, "label").text, "the predicted class")
    assert label in ("unacceptable", "acceptable")
    words = [w.text.split()[0] for w in browser.find_elements(By.CSS_SELECTOR, "#words .word")]
    assert words == ["the", "dog", "sat", "on", "the", "mat"]
    weights = [
        float(w.get_attribute("data-weight")) for w in browser.find_elements(By.CSS_SELECTOR, "#words .word")
    ]
    assert any(weight != 0 for weight in weights)
    neighbours = browser.find_elements(By.CSS_SELECTOR, "#neighbours tr.neighbour")
    assert len(neighbours) == 5
    first = [td.text for td in neighbours[0].find_elements(By.TAG_NAME, "td")]
    assert first[0] in dict(TRAINING) and first[1] in ("unacceptable", "acceptable")
    others = browser.find_elements(By.CSS_SELECTOR, "#other tr.neighbour")
    assert others and all(row.find_elements(By.TAG_NAME, "td")[1].text != label for row in others)
    browser.save_screenshot(str(SHOTS / "explained.png"))

    box.clear()
    browser.find_element(By.ID, "explain").click()
    error = wait_for(browser, lambda b: b.find_element(By.ID, "error").text, "the message for empty text")
    assert "empty" in error
    assert not browser.find_element(By.ID, "result").is_displayed()
