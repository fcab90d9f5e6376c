"""Shared test plumbing: markers that must not skip in CI, and paths to independent tools."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
MUST_RUN_MARKERS = ("bpf", "root")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """In CI a skipped BPF or root test is a failure: it proves nothing when it does not run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and any(item.get_closest_marker(m) for m in MUST_RUN_MARKERS):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a {'/'.join(MUST_RUN_MARKERS)} test may not skip ({report.longrepr})"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(scope="session")
def pprof_tool() -> Path:
    """Google's pprof, built by `make test` (packaging/dev/install-deps.sh test)."""
    path = REPO / ".cache" / "bin" / "pprof"
    if not path.exists():
        found = shutil.which("pprof")
        if found is None:
            pytest.fail("Google pprof not built: run `make test` (it builds .cache/bin/pprof)")
        return Path(found)
    return path


SPEEDSCOPE_SCHEMA = REPO / ".cache/speedscope/node_modules/speedscope/dist/release/file-format-schema.json"


@pytest.fixture(scope="session")
def speedscope_schema() -> dict[str, object]:
    """speedscope's published file-format schema, from its npm package (installed by `make test`)."""
    if not SPEEDSCOPE_SCHEMA.exists():
        pytest.fail(f"{SPEEDSCOPE_SCHEMA} missing: run `make test` (install-deps.sh test installs npm's speedscope)")
    schema: dict[str, object] = json.loads(SPEEDSCOPE_SCHEMA.read_text())
    return schema


@pytest.fixture(scope="module")
def browser() -> Generator[Any, None, None]:
    """Headless Chromium driven by selenium (installed by `make test`); quit after the module, so
    no browser is left running while other modules measure CPU samples."""
    from tests.browser import CHROMEDRIVER, CHROMIUM, start_chromium

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are not installed: run `make test` (install-deps.sh test)")
    driver = start_chromium()
    yield driver
    driver.quit()
