"""Headless Chromium for the tests that look at rtcheck's pages the way a person does.

Debian's ``chromium`` is driven through Debian's ``chromium-driver`` with Selenium: the
driver comes from the same source package as the browser, so their versions always match,
and nothing is downloaded at run time (the machines reach no browser download site). The
browser runs with a fresh empty profile and every background service off, so it opens
only the ``file://`` page it is given.

Like the DCMTK tests, a test that needs the browser skips on a developer machine without
it and fails in CI (``CI`` set), where `.ci/run` installs it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers import missing

#: Chromium's flags for a headless run as root on a machine without network: no sandbox
#: (root), no GPU, and none of the services that would try to reach Google.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
)

#: A desktop screen and a phone screen (CSS pixels), for "in the first screen" checks.
DESKTOP = (1280, 800)
PHONE = (390, 844)

_FIGURES_JS = """
return Array.from(document.querySelectorAll('figure')).map((f, i) => {
  const img = f.querySelector('img'), svg = f.querySelector('svg');
  const box = (img || svg || f).getBoundingClientRect();
  return {
    index: i,
    kind: img ? 'img' : (svg ? 'svg' : 'none'),
    loaded: img ? (img.complete && img.naturalWidth > 0 && img.naturalHeight > 0)
                : (svg ? svg.querySelectorAll('path, text, use').length > 0 : false),
    width: box.width, height: box.height,
    caption: (f.querySelector('figcaption') || {}).textContent || f.textContent.slice(0, 80),
  };
});
"""


@dataclass(frozen=True)
class Figure:
    """One ``<figure>`` of a page as the browser laid it out."""

    index: int
    kind: str  # "img", "svg" or "none"
    loaded: bool
    width: float
    height: float
    caption: str

    @property
    def shown(self) -> bool:
        return self.kind != "none" and self.loaded and self.width > 0 and self.height > 0


class Page:
    """A page open in the browser: its console, its figures, where things are on screen."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def console_errors(self) -> list[str]:
        """Console messages of level error (uncaught exceptions and failed loads included)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def figures(self) -> list[Figure]:
        return [Figure(**f) for f in self.driver.execute_script(_FIGURES_JS)]

    def bottom_of(self, css: str) -> float:
        """Where the first element matching ``css`` ends, in CSS pixels from the top of the page."""
        js = f"return document.querySelector({css!r}).getBoundingClientRect().bottom"
        return float(self.driver.execute_script(js))

    def viewport_height(self) -> float:
        return float(self.driver.execute_script("return window.innerHeight"))

    def script(self, js: str) -> Any:
        return self.driver.execute_script(js)

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path


class Browser:
    """One headless Chromium, reused by the tests of a module (starting one takes a second)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, path: Path, size: tuple[int, int] = DESKTOP) -> Page:
        """Open a local file with a viewport of ``size`` CSS pixels; console logs start empty."""
        width, height = size
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        self.driver.get_log("browser")  # drop what the previous page logged
        self.driver.get(path.resolve().as_uri())  # returns once the page has loaded
        return Page(self.driver)


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary) or (f"/usr/bin/{binary}" if Path(f"/usr/bin/{binary}").exists() else None)
    if found is None:
        missing(f"{binary} not found (apt-get install {package})")
    return str(found)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium with a new empty profile, ended when the block ends."""
    browser_binary = _require("chromium", "chromium")
    driver_binary = _require("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="rtcheck-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser_binary
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_binary), options=options)
        try:
            yield Browser(driver)
        finally:
            driver.quit()
