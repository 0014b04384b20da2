"""A real headless Chromium (the system's chromium and chromedriver, scripts/test installs them) driven by
Selenium, for pages the project writes: what a reader's browser would load, show and complain about."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Every <img> and <audio> of the page: whether it loaded, and why not.
_MEDIA_STATE = """
return {
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                  width: i.naturalWidth})),
  audio: Array.from(document.querySelectorAll('audio')).map(a => ({src: a.getAttribute('src'),
                                                  ready: a.readyState, error: a.error ? a.error.code : null})),
};
"""


@dataclass
class PageState:
    images: list[dict]
    audio: list[dict]
    console_errors: list[str]
    load_seconds: float

    def broken(self) -> list[dict]:
        """The images not loaded and the players without their audio's metadata."""
        return ([i for i in self.images if not (i["complete"] and i["width"] > 0)]
                + [a for a in self.audio if a["ready"] < 1 or a["error"] is not None])


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"{names[0]} not found: run scripts/test as root, or apt-get install chromium chromium-driver")


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--autoplay-policy=no-user-gesture-required", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_binary("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: webdriver.Chrome, page: Path, settle_timeout: float = 60.0) -> PageState:
    """Load ``page`` and wait until each of its media has loaded or failed (or ``settle_timeout`` passed)."""
    driver.get_log("browser")  # what earlier pages logged
    started = time.monotonic()
    driver.get(page.resolve().as_uri())
    while True:
        state = driver.execute_script(_MEDIA_STATE)
        pending = [a for a in state["audio"] if a["ready"] < 1 and a["error"] is None]
        pending += [i for i in state["images"] if not i["complete"]]
        if not pending or time.monotonic() - started > settle_timeout:
            break
        time.sleep(0.1)
    load_seconds = time.monotonic() - started
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return PageState(state["images"], state["audio"], errors, load_seconds)


def table_rows(driver: webdriver.Chrome) -> list[list[str]]:
    """The text of each cell of each table row of the page, as shown."""
    return driver.execute_script("return Array.from(document.querySelectorAll('tr'))"
                                 ".map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def screenshot(driver: webdriver.Chrome, path: Path, width: int = 1200) -> None:
    """The whole page, as tall as it is, as PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 100, 8000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
