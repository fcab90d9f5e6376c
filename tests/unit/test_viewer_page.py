"""The viewer page in a real headless Chromium, on small hand-made profiles whose numbers are
known by construction: what is drawn, zoom, breadcrumb, search share, tooltip, top table,
selector, orientation, kind colors, and a diff's red and blue. Screenshots: out/test-artifacts/."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from agent.exporters.html import render_data_page, render_html, stacks_of
from agent.model import FrameKind
from agent.view.flame import diff_data
from tests.browser import Viewer
from tests.profile_factory import APP, KERNEL, LIBC, make_profile, sample, sym

MAIN = sym(APP.start + 0x10, APP, "main", file="/src/main.c", line=10)
WORK = sym(APP.start + 0x20, APP, "hash_inl", "work", file="/src/work.c", line=20)
MEMCPY = sym(LIBC.start + 0x30, LIBC, "memcpy")
SYSCALL = sym(KERNEL.start + 0x40, KERNEL, "do_syscall_64", kind=FrameKind.KERNEL)
MATCH = (214, 58, 208)  # the page's highlight color, #d63ad0

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 5 samples: server main>work>hash_inl>memcpy (3), other main>memcpy>do_syscall_64 (2)
    profile = make_profile(sample(MEMCPY, WORK, MAIN, count=3), sample(SYSCALL, MEMCPY, MAIN, count=2, comm="other",
                                                                          pid=7),
                           counters={"lost_counts_map_full": 4, "taken": 9})
    path = tmp_path_factory.mktemp("page") / "flame.html"
    path.write_text(render_html(profile))
    return path


@pytest.fixture
def viewer(browser: Any, page: Path) -> Viewer:
    return Viewer(browser, page)


def table_names(viewer: Viewer) -> list[str]:
    rows = viewer.driver.find_elements(By.CSS_SELECTOR, "#top tbody tr")
    return [r.find_element(By.TAG_NAME, "td").text for r in rows]


def hue(rgb: tuple[int, int, int]) -> float:
    return colorsys.rgb_to_hls(*(c / 255 for c in rgb))[0] * 360


def test_frames_are_drawn_with_the_facts(viewer: Viewer) -> None:
    # WHEN the page opens THEN every node is drawn, pixels are painted, and the facts are shown
    state = viewer.state()
    assert state["total"] == 5 and state["drawn"] == state["nodes"] and state["zoom"] == "all"
    assert viewer.painted_share() > 0.05
    facts = viewer.text("facts")
    for part in ("host node-1", "frequency 99 Hz", "samples 5 samples", "lost samples 4", "2023-11-14T22:13:20Z"):
        assert part in facts
    # AND processes sit side by side under the root, sorted by name
    other, server = viewer.box_of("other", "process"), viewer.box_of("server", "process")
    assert other and server and other["y"] == server["y"] and other["x"] < server["x"]
    assert viewer.console_errors() == []
    viewer.screenshot("unit-flame")


def test_click_zooms_and_the_breadcrumb_zooms_out(viewer: Viewer) -> None:
    viewer.click_box("work")
    assert viewer.state()["zoom"] == "work"
    assert "zoomed into work (60.00%)" in viewer.text("status")
    assert viewer.text("crumbs").split(" › ") == ["all", "server", "main", "work"]
    # the callees of work fill the width; the other process is gone
    assert viewer.box_of("memcpy") is not None and viewer.box_of("do_syscall_64") is None
    viewer.driver.find_element(By.CSS_SELECTOR, "#crumbs button[data-node='0']").click()
    assert viewer.state()["zoom"] == "all" and viewer.box_of("do_syscall_64") is not None
    viewer.click_box("main")
    viewer.driver.find_element(By.ID, "reset").click()
    assert viewer.state()["zoom"] == "all"


def test_tooltip_names_function_file_line_self_and_total(viewer: Viewer) -> None:
    box = viewer.box_of("work")
    assert box
    viewer.hover_at(box["x"] + 5, box["y"] + 5)
    tooltip = viewer.text("tooltip")
    for part in ("work", "/src/work.c:21", "/opt/app/bin/server (native)", "total 3 samples, 60.00%",
                 "self 0 samples, 0.00%"):
        assert part in tooltip
    box = viewer.box_of("memcpy")
    assert box
    viewer.hover_at(box["x"] + 5, box["y"] + 5)
    assert "self 3 samples, 60.00%" in viewer.text("tooltip")


def test_search_highlights_and_gives_the_matched_share(viewer: Viewer) -> None:
    viewer.driver.find_element(By.ID, "search").send_keys("memcpy")
    assert viewer.state()["matchedShare"] == 1.0
    assert "matched 5 samples, 100.00% of all" in viewer.text("status")
    box = viewer.box_of("memcpy")
    assert box and viewer.pixel(box["x"] + 2, box["y"] + 2) == MATCH
    main = viewer.box_of("main")
    assert main and viewer.pixel(main["x"] + 2, main["y"] + 2) != MATCH
    search = viewer.driver.find_element(By.ID, "search")
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys("hash_")
    assert viewer.state()["matchedShare"] == pytest.approx(0.6)
    # the table shows the matching functions only
    assert table_names(viewer) == ["hash_inl"]


def test_top_table_sorts_and_a_row_highlights_its_frames(viewer: Viewer) -> None:
    rows = viewer.driver.find_elements(By.CSS_SELECTOR, "#top tbody tr")
    first = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
    assert first[0] == "memcpy" and first[2:4] == ["3 samples", "60.00%"]  # most self samples first
    viewer.driver.find_element(By.CSS_SELECTOR, "#top th[data-sort='total']").click()
    assert table_names(viewer)[:2] == ["main", "memcpy"]  # 5 samples each, then by name
    row = next(r for r in viewer.driver.find_elements(By.CSS_SELECTOR, "#top tbody tr")
               if r.find_element(By.TAG_NAME, "td").text == "work")
    row.click()
    assert viewer.state()["picked"] == "work" and viewer.state()["matchedShare"] == pytest.approx(0.6)
    box = viewer.box_of("work")
    assert box and viewer.pixel(box["x"] + 2, box["y"] + 2) == MATCH


def test_selector_shows_one_label_value(viewer: Viewer) -> None:
    assert viewer.js("return window.hostflame.labelKeys()") == ["process", "comm", "pid"]
    viewer.js("window.hostflame.select('comm', 'other')")
    state = viewer.state()
    assert state["total"] == 2 and state["selection"] == {"key": "comm", "value": "other"}
    assert viewer.box_of("work") is None and viewer.box_of("do_syscall_64") is not None
    viewer.screenshot("unit-selector-comm-other")
    viewer.js("window.hostflame.select('process', 'server [42]')")
    assert viewer.state()["total"] == 3
    viewer.js("window.hostflame.select('')")
    assert viewer.state()["total"] == 5


def test_orientation_and_kind_colors(viewer: Viewer) -> None:
    top_down = viewer.box_of("main")
    viewer.driver.find_element(By.ID, "orientation").click()
    bottom_up = viewer.box_of("main")
    assert viewer.state()["icicle"] is False and top_down and bottom_up and bottom_up["y"] > top_down["y"]
    # kernel frames are red-ish, native orange, inlined yellow: distinct hue ranges
    colors = {}
    for name in ("do_syscall_64", "memcpy", "hash_inl", "main", "work"):
        box = viewer.box_of(name)
        assert box
        colors[name] = hue(viewer.pixel(box["x"] + 2, box["y"] + 2))
    assert colors["do_syscall_64"] >= 340 or colors["do_syscall_64"] <= 12, colors
    assert 15 <= colors["memcpy"] <= 50 and 45 <= colors["hash_inl"] <= 65, colors
    # one module, one hue (names only change the lightness): main and work are both in the server binary
    assert abs(colors["main"] - colors["work"]) < 2.5, colors


def test_a_diff_colors_grown_red_and_shrunk_blue(browser: Any, tmp_path: Path) -> None:
    # GIVEN work's share going from 25 % (base) to 75 % (new) and memcpy directly under main the other way
    base = make_profile(sample(MEMCPY, MAIN, count=30), sample(WORK, MAIN, count=10))
    new = make_profile(sample(MEMCPY, MAIN, count=5), sample(WORK, MAIN, count=15))
    page = tmp_path / "diff.html"
    page.write_text(render_data_page(diff_data(stacks_of(base), stacks_of(new)), "diff"))
    viewer = Viewer(browser, page)
    # THEN work is red, the memcpy under main is blue, the table has both shares and the change
    work, memcpy = viewer.box_of("work"), viewer.box_of("memcpy")
    assert work and memcpy and work["delta"] == pytest.approx(0.5) and memcpy["delta"] == pytest.approx(-0.5)
    r, g, b = viewer.pixel(work["x"] + 2, work["y"] + 2)
    assert r > 180 and g < 100 and b < 100
    r, g, b = viewer.pixel(memcpy["x"] + 2, memcpy["y"] + 2)
    assert b > 180 and r < 100
    rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
            for r in viewer.driver.find_elements(By.CSS_SELECTOR, "#top tbody tr")]
    by_name = {row[0]: row for row in rows}
    assert by_name["work"][2:5] == ["0.00%", "0.00%", "+0.00%"]  # self: hash_inl is the leaf
    assert by_name["hash_inl"][2:5] == ["25.00%", "75.00%", "+50.00%"]
    assert by_name["memcpy"][2:5] == ["75.00%", "25.00%", "−50.00%"]
    viewer.screenshot("unit-diff")
