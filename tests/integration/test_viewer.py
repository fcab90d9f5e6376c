"""The viewer on profiles hostflame recorded on the real kernel, in a real headless Chromium.

The workload is tests/fixtures/c/split.c: dispatch() calls leaf_a with RATIO times the work
of leaf_b. One whole-host recording (ratio 3) for the page; for the diff two recordings of
the workload alone (``--pid``: other test runs on the host may run split.c too), base with
ratio 1 and new with ratio 3, so leaf_a's share grows by construction. Expected numbers come
from Google pprof reading the same files.
Screenshots are kept in out/test-artifacts/.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.browser import Viewer
from tests.integration.conftest import hostflame, pprof_traces

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.browser, pytest.mark.slow]
MATCH = (214, 58, 208)


@dataclass
class Recorded:
    pprof: Path
    html: Path  # record's own .html output
    pid: int


def record_split(split_exe: Path, out: Path, name: str, ratio: int, only_split: bool) -> Recorded:
    proc = subprocess.Popen([str(split_exe), "30", str(ratio)])
    try:
        pprof, html = out / f"{name}.pb.gz", out / f"{name}.html"
        pid = ("--pid", str(proc.pid)) if only_split else ()
        result = hostflame("record", "--duration", "3", "--frequency", "199", "--top", "0", "-o", str(pprof),
                           "-o", str(html), *pid)
        assert result.returncode == 0, result.stderr
    finally:
        proc.kill()
        proc.wait()
    return Recorded(pprof, html, proc.pid)


@pytest.fixture(scope="module")
def whole_host(split_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return record_split(split_exe, tmp_path_factory.mktemp("viewer"), "host", 3, only_split=False)


@pytest.fixture(scope="module")
def recordings(split_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Recorded, Recorded]]:
    out = tmp_path_factory.mktemp("viewer-diff")
    yield (record_split(split_exe, out, "base", 1, only_split=True),
           record_split(split_exe, out, "new", 3, only_split=True))


def share_of(pprof_tool: Path, profile: Path, function: str, pid: int | None = None) -> tuple[int, int]:
    """(samples with ``function`` on the stack, all samples) as Google pprof counts them."""
    traces = pprof_traces(pprof_tool, profile)
    if pid is not None:
        traces = [t for t in traces if t.labels.get("pid") == [str(pid)]]
    return sum(t.value for t in traces if function in t.frames), sum(t.value for t in traces)


def path_share(pprof_tool: Path, profile: Path, path: list[str]) -> float:
    """Share of samples whose stack runs through ``path`` (callee first, e.g. leaf_a under
    dispatch under main): one node of the viewer's tree. A stray stack holding leaf_a
    elsewhere (a sample in its prologue, before its frame exists) is another node."""
    traces = pprof_traces(pprof_tool, profile)
    on_path = sum(t.value for t in traces
                  if any(t.frames[i:i + len(path)] == path for i in range(len(t.frames))))
    return on_path / sum(t.value for t in traces)


def test_recorded_page_draws_zooms_searches_and_selects(whole_host: Recorded, browser: Any, pprof_tool: Path) -> None:
    new = whole_host
    # GIVEN record's own .html output of a whole-host profile WHEN opened in Chromium
    viewer = Viewer(browser, new.html)
    state = viewer.state()
    leaf_a, total = share_of(pprof_tool, new.pprof, "leaf_a")
    # THEN it shows the samples Google pprof counts, frames are drawn, the facts include lost samples
    assert state["total"] == total and state["drawn"] > 10 and viewer.painted_share() > 0.02
    assert "lost samples" in viewer.text("facts") and "frequency 199 Hz" in viewer.text("facts")
    assert viewer.console_errors() == []
    viewer.screenshot("recorded-flame")
    # WHEN searching leaf_a THEN its frames are highlighted and the share is pprof's
    viewer.js("window.hostflame.search('^leaf_a$')")
    assert viewer.state()["matchedShare"] == pytest.approx(leaf_a / total)
    box = viewer.box_of("leaf_a")
    assert box and viewer.pixel(box["x"] + 2, box["y"] + 2) == MATCH
    assert f"{100 * leaf_a / total:.2f}% of all" in viewer.text("status")
    viewer.screenshot("recorded-search-leaf_a")
    # WHEN clicking dispatch THEN the graph zooms into it: its callees fill the width
    viewer.click_box("dispatch")
    state = viewer.state()
    assert state["zoom"] == "dispatch" and viewer.text("crumbs").endswith("main › dispatch")
    zoomed = viewer.box_of("leaf_a")
    assert zoomed and zoomed["x"] == 0 and zoomed["w"] > 0.6 * viewer.canvas.size["width"]
    viewer.screenshot("recorded-zoom-dispatch")
    # WHEN selecting the workload's process THEN only its samples remain, as pprof counts them
    keys = viewer.js("return window.hostflame.labelKeys()")
    assert keys[:2] == ["process", "comm"] and "pid" in keys
    viewer.js("window.hostflame.select('pid', arguments[0])", str(new.pid))
    in_pid, pid_total = share_of(pprof_tool, new.pprof, "leaf_a", new.pid)
    state = viewer.state()
    assert state["total"] == pid_total and state["matchedShare"] == pytest.approx(in_pid / pid_total)
    assert viewer.box_of("hostflame", "process") is None
    viewer.screenshot("recorded-selector-pid")


def test_view_of_the_recorded_pprof_shows_the_same_profile(whole_host: Recorded, browser: Any, tmp_path: Path,
                                                            speedscope_schema: dict[str, object]) -> None:
    new = whole_host
    page = tmp_path / "view.html"
    result = hostflame("view", str(new.pprof), "-o", str(page), "-o", str(tmp_path / "v.speedscope.json"))
    assert result.returncode == 0, result.stderr
    speedscope = json.loads((tmp_path / "v.speedscope.json").read_text())
    jsonschema.validate(speedscope, speedscope_schema)
    assert "split" in {p["name"] for p in speedscope["profiles"]}
    from_view = Viewer(browser, page).state()
    from_record = Viewer(browser, new.html).state()
    assert from_view == from_record


def test_diff_of_two_recordings_shows_the_grown_function_red(recordings: tuple[Recorded, Recorded], browser: Any,
                                                             tmp_path: Path, pprof_tool: Path) -> None:
    base, new = recordings
    page = tmp_path / "diff.html"
    result = hostflame("diff", str(base.pprof), str(new.pprof), "-o", str(page))
    assert result.returncode == 0, result.stderr
    viewer = Viewer(browser, page)
    # THEN leaf_a's share grew (by pprof's counts, and by construction) and its box is red
    a_base, total_base = share_of(pprof_tool, base.pprof, "leaf_a")
    a_new, total_new = share_of(pprof_tool, new.pprof, "leaf_a")
    assert a_new / total_new > a_base / total_base
    box = viewer.box_of("leaf_a")  # the biggest leaf_a box: leaf_a under dispatch under main
    path = ["leaf_a", "dispatch", "main"]
    assert box and box["delta"] == pytest.approx(path_share(pprof_tool, new.pprof, path)
                                                 - path_share(pprof_tool, base.pprof, path))
    r, g, b = viewer.pixel(box["x"] + 2, box["y"] + 2)
    assert r > 150 and r > g + 80 and r > b + 80, (r, g, b)
    # AND leaf_b shrank: blue
    box = viewer.box_of("leaf_b")
    assert box and box["delta"] < 0
    r, g, b = viewer.pixel(box["x"] + 2, box["y"] + 2)
    assert b > r + 60, (r, g, b)
    # AND the table lists leaf_a with both shares
    row = viewer.js("return Array.from(document.querySelectorAll('#top tbody tr'))"
                    ".map(r => Array.from(r.cells).map(c => c.textContent)).find(r => r[0] === 'leaf_a')")
    assert row[5:7] == [f"{100 * a_base / total_base:.2f}%", f"{100 * a_new / total_new:.2f}%"]
    viewer.screenshot("recorded-diff")
