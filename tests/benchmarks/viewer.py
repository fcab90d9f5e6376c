"""``make bench-viewer``: how fast the HTML viewer draws a large profile in a real browser.

A synthetic profile (tests/profile_factory.large_profile) big enough for VIEWER_NODES call-tree
nodes (default 200 000) is written as pprof, then ``hostflame view`` turns it into a page. The
page is opened BENCH_REPS times (default 5) in headless Chromium (Debian's chromium +
chromium-driver, selenium); the page's own ``performance.now()`` marks give:
- ``ready_ms``: navigation start to the end of the first draw (HTML and JSON parse included),
- ``painted_ms``: navigation start to the next animation frame after it (the frame is on screen),
- ``script_ms`` / ``first_draw_ms``: the script alone, and its first canvas draw;
then in the loaded page: zoom into 20 nodes (10 processes, 10 nodes two levels below: the
largest subtrees) (``zoom_ms``, median and max, each a full redraw), search a regex
(``search_ms``), select one label value (``select_ms``), flip to the flame orientation.
Targets: ready_ms < 1000 and zoom_ms max < 100 (no visible lag).
Python's side (read pprof, build data, write the page) is timed too, for the record.
No root needed.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.pprof import build_pprof
from agent.view.commands import view
from tests.benchmarks.common import Settings, machine
from tests.benchmarks.output import Table, say, target, write_result
from tests.profile_factory import large_profile

NAME = "viewer"
TARGET_NODES = 200_000
READY_MS = 1000.0
ZOOM_MS = 100.0

_LOAD_JS = """
const done = arguments[arguments.length - 1];
const api = window.hostflame;
requestAnimationFrame(() => {
  const nav = performance.getEntriesByType("navigation")[0];
  done({ready: api.timings.readyAt, painted: performance.now(), script: api.timings.script,
        firstDraw: api.timings.firstDraw, decode: api.timings.decode, table: api.timings.table,
        responseEnd: nav.responseEnd, domInteractive: nav.domInteractive, nodes: api.state().nodes,
        drawn: api.state().drawn});
});
"""

_INTERACT_JS = """
const api = window.hostflame;
const time = (f) => { const t = performance.now(); f(); return performance.now() - t; };
const s = api.state();
const zooms = [];  // into processes and their first callers: the biggest subtrees, the most to draw
for (const n of api.nodesAt(1, 10).concat(api.nodesAt(3, 10))) zooms.push(time(() => api.zoomTo(n)));
const reset = time(() => api.zoomTo(0));
const search = time(() => api.search("func_1[0-9]"));
const matched = api.state().matchedShare;
const clear = time(() => api.search(""));
const select = time(() => api.select("comm", "proc3"));
const selectedTotal = api.state().total;
const unselect = time(() => api.select(""));
const flip = time(() => document.getElementById("orientation").click());
return {zooms, reset, search, matched, clear, select, selectedTotal, unselect, flip};
"""


def make_page(work: Path, nodes: int, samples: int = 0) -> tuple[Path, dict[str, float]]:
    """The page of a synthetic profile with at least ``nodes`` tree nodes, and Python's timings."""
    samples = samples or nodes // 29 + 1  # nearly every random stack is a path of its own below depth 3
    profile = large_profile(n_samples=samples, depth=30)
    source = work / "large.pb.gz"
    source.write_bytes(build_pprof(profile))
    page = work / "large.html"
    started = time.perf_counter()
    view(source, [page])
    python_s = time.perf_counter() - started
    text = page.read_text()
    data = json.loads(re.search(r'<script id="hostflame-data" type="application/json">(.*?)</script>', text, re.S)
                      .group(1))  # type: ignore[union-attr]
    if len(data["tree"]["up"]) < nodes:
        return make_page(work, nodes, samples * 11 // 10)
    return page, {"python_view_s": python_s, "page_mb": page.stat().st_size / 1e6,
                  "pprof_mb": source.stat().st_size / 1e6, "nodes": len(data["tree"]["up"]),
                  "samples": len(data["samples"]["node"])}


def run(settings: Settings) -> dict[str, Any]:
    from tests.browser import start_chromium

    reps = int(os.environ.get("BENCH_REPS", "5"))
    nodes_wanted = int(os.environ.get("VIEWER_NODES", str(TARGET_NODES)))
    with tempfile.TemporaryDirectory(prefix="hostflame-bench-viewer-") as tmp:
        page, built = make_page(Path(tmp), nodes_wanted)
        say(f"viewer: page of {built['nodes']} nodes, {built['samples']} samples, {built['page_mb']:.1f} MB "
            f"(pprof {built['pprof_mb']:.1f} MB); hostflame view took {built['python_view_s']:.2f} s")
        driver = start_chromium()
        driver.set_script_timeout(60)
        loads, interactions = [], []
        try:
            for _ in range(reps):
                driver.get("about:blank")
                driver.get(page.as_uri())
                loads.append(driver.execute_async_script(_LOAD_JS))
                interactions.append(driver.execute_script(_INTERACT_JS))
            browser_version = driver.capabilities.get("browserVersion", "")
        finally:
            driver.quit()
    table = Table(f"viewer: {built['nodes']} nodes in headless Chromium {browser_version} (ms)",
                  ["rep", "ready", "painted", "script", "first draw", "zoom med", "zoom max", "search", "select"])
    for i, (load, act) in enumerate(zip(loads, interactions, strict=True), start=1):
        table.add(str(i), load["ready"], load["painted"], load["script"], load["firstDraw"],
                  statistics.median(act["zooms"]), max(act["zooms"]), act["search"], act["select"])
    medians = {
        "ready_ms": statistics.median(x["ready"] for x in loads),
        "painted_ms": statistics.median(x["painted"] for x in loads),
        "script_ms": statistics.median(x["script"] for x in loads),
        "first_draw_ms": statistics.median(x["firstDraw"] for x in loads),
        "html_received_ms": statistics.median(x["responseEnd"] for x in loads),
        "zoom_ms_median": statistics.median(z for act in interactions for z in act["zooms"]),
        "zoom_ms_max": statistics.median(max(act["zooms"]) for act in interactions),
        "search_ms": statistics.median(x["search"] for x in interactions),
        "select_ms": statistics.median(x["select"] for x in interactions),
        "flip_ms": statistics.median(x["flip"] for x in interactions),
    }
    table.add("median", medians["ready_ms"], medians["painted_ms"], medians["script_ms"], medians["first_draw_ms"],
              medians["zoom_ms_median"], medians["zoom_ms_max"], medians["search_ms"], medians["select_ms"])
    say(table.render())
    targets = {
        "ready": target(f"{built['nodes']} nodes drawn < {READY_MS:g} ms after navigation start",
                        medians["ready_ms"], medians["ready_ms"] < READY_MS),
        "zoom": target(f"zoom redraw (worst of 20, median over reps) < {ZOOM_MS:g} ms", medians["zoom_ms_max"],
                       medians["zoom_ms_max"] < ZOOM_MS),
    }
    result = {"name": NAME, "machine": machine(), "browser": browser_version, "page": built, "reps": reps,
              "loads": loads, "interactions": interactions, "medians": medians, "targets": targets}
    result["json"] = str(write_result(settings, NAME, result))
    return result


def main() -> int:
    result = run(Settings.from_env())
    for t in result["targets"].values():
        say(f"  {'MET   ' if t['met'] else 'MISSED'}  {t['target']} (value {t['value']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
