"""Headless Chromium (Debian's chromium + chromium-driver) driven by selenium, for viewer pages.

``start_chromium`` opens the browser with the flags of environment.md; ``Viewer`` opens one
page and reads what it drew: the page's own state (``window.hostflame``), canvas pixels, and
it clicks and hovers at canvas coordinates in the viewport's own coordinates (the canvas is
often taller than the window, so the point is scrolled to the middle first). Screenshots go
to ``out/test-artifacts/`` and are kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "out" / "test-artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1400,1000", "--hide-scrollbars")


def start_chromium() -> WebDriver:
    """A headless Chromium with a fresh profile directory (the caller quits it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='hostflame-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


class Viewer:
    """One hostflame page open in the browser."""

    def __init__(self, driver: WebDriver, page: Path):
        self.driver = driver
        driver.get(page.resolve().as_uri())
        self.canvas = driver.find_element(By.ID, "flame")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.js("return window.hostflame.state()")
        return state

    def box_of(self, name: str, kind: str = "") -> dict[str, float] | None:
        box: dict[str, float] | None = self.js("return window.hostflame.boxOf(arguments[0], arguments[1])", name, kind)
        return box

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

    def _to_viewport(self, x: float, y: float) -> tuple[int, int]:
        left, top = self.js(
            "const c = arguments[0];"
            "window.scrollBy(0, c.getBoundingClientRect().top + arguments[1] - innerHeight / 2);"
            "const r = c.getBoundingClientRect(); return [r.left, r.top];", self.canvas, y)
        return int(left + x), int(top + y)

    def click_at(self, x: float, y: float) -> None:
        actions = ActionBuilder(self.driver)
        actions.pointer_action.move_to_location(*self._to_viewport(x, y))
        actions.pointer_action.click()
        actions.perform()

    def hover_at(self, x: float, y: float) -> None:
        actions = ActionBuilder(self.driver)
        actions.pointer_action.move_to_location(*self._to_viewport(x, y))
        actions.perform()

    def click_box(self, name: str) -> None:
        box = self.box_of(name)
        assert box is not None, f"{name} is not drawn"
        self.click_at(box["x"] + min(box["w"] / 2, 20), box["y"] + box["h"] / 2)

    def pixel(self, x: float, y: float) -> tuple[int, int, int]:
        """The canvas pixel at CSS point (x, y), as red, green, blue."""
        rgba = self.js(
            "const c = arguments[0], d = devicePixelRatio || 1;"
            "const x = Math.floor(arguments[1] * d), y = Math.floor(arguments[2] * d);"
            "return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);", self.canvas, x, y)
        return int(rgba[0]), int(rgba[1]), int(rgba[2])

    def painted_share(self) -> float:
        """The share of canvas pixels that are not blank: frames were drawn."""
        share: float = self.js(
            "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let painted = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) painted++;"
            "return painted / (d.length / 4);", self.canvas)
        return share

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.js("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(path))
        return path

    def console_errors(self) -> list[dict[str, Any]]:
        return [entry for entry in self.driver.get_log("browser") if entry.get("level") == "SEVERE"]
