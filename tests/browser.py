"""Headless Chromium for the tests that look at a page as a person would (the MLflow UI, the what-if page):
one way to start it and one way to wait for what a page shows, a screenshot kept when it never does."""

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def headless_chromium(shots: Path, width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A Chrome driver over Debian's chromium and chromedriver (`make browser`); `shots` is emptied for this
    run's screenshots."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(0)
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    browser, condition: Callable, what: str, shots: Path, timeout_s: float = 60, poll_s: float = 0.5
):
    """Poll `condition(browser)` until it returns something truthy; a screenshot in `shots` when it never
    does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if found := condition(browser):
                return found
        except Exception:  # noqa: BLE001 (the page is still rendering)
            pass
        time.sleep(poll_s)
    browser.save_screenshot(str(shots / f"timeout-{what.replace(' ', '-')}.png"))
    raise AssertionError(f"the page never showed {what} (screenshot in {shots})")
