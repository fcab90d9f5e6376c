"""HTML exporter: one self-contained flame graph page (no network; opens from file://).

Stage: an exporter format. In: an ``agent.model.Profile``. Out: HTML text made of the template
``flamegraph.html``, the script ``flamegraph.js`` and the profile as JSON (``flame_data``).

The JSON (``"format": "hostflame-flame/1"``) is meant to grow with a richer viewer:
- ``meta``: host, start (ISO 8601 UTC and Unix ms), duration_ns, frequency_hz, period_ns,
  samples, counters.
- ``strings``: interned strings; ``kinds``: frame kind names; ``frames``: one row per distinct
  frame, ``[name, file, module, kind]`` (string indexes, then a kinds index).
- ``tree``: the call tree as columns of equal length, one entry a node: ``frame``, ``line``,
  ``samples`` and ``parent`` (an index into the columns). Node 0 is the root (frame -1, parent
  -1) and a parent always comes before its children; the viewer orders siblings (by name). The
  root's children are processes (kind "process", the ``comm`` label), then come frames root
  first; inlined frames are nodes of their own. ``line`` is 0 when the samples through a node
  do not share one line.
"""

from __future__ import annotations

import html
import json
import re
import time
from importlib import resources

from agent.model import FrameKind, Profile, ProfileSample, Symbolized
from agent.pprof import KERNEL_MODULE

__all__ = ["FORMAT", "KINDS", "flame_data", "render_html"]

FORMAT = "hostflame-flame/1"
PROCESS_KIND = "process"
KINDS = (PROCESS_KIND, *(kind.value for kind in FrameKind))
_PLACEHOLDER = re.compile(r"\{\{(TITLE|DATA|SCRIPT)\}\}")
# Inside <script type="application/json"> only "</script" or "<!--" could end the data early.
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


class _Tree:
    """The merged call tree in columns: no per-node objects, so the collector has nothing to scan."""

    def __init__(self) -> None:
        self.frame = [-1]
        self.line = [0]
        self.samples = [0]
        self.parent = [-1]
        self.child_index: dict[int, int] = {}  # parent << 32 | frame -> node

    def add(self, steps: list[tuple[int, int]], count: int) -> None:
        frames, lines, samples, parents = self.frame, self.line, self.samples, self.parent
        child_index = self.child_index
        samples[0] += count
        node = 0
        for frame, line in steps:
            key = node << 32 | frame
            child = child_index.get(key)
            if child is None:
                child = child_index[key] = len(frames)
                frames.append(frame)
                lines.append(line)
                samples.append(count)
                parents.append(node)
            else:
                if lines[child] != line:
                    lines[child] = 0
                samples[child] += count
            node = child

    def columns(self) -> dict[str, list[int]]:
        return {"frame": self.frame, "line": self.line, "samples": self.samples, "parent": self.parent}


class _FrameTable:
    def __init__(self) -> None:
        self.strings: dict[str, int] = {"": 0}
        self.rows: dict[tuple[int, int, int, int], int] = {}
        self.paths: dict[int, list[tuple[int, int]]] = {}  # id(Symbolized) -> (frame, line), root side first

    def string(self, value: str) -> int:
        index = self.strings.get(value)
        if index is None:
            index = self.strings[value] = len(self.strings)
        return index

    def frame(self, name: str, file: str, module: str, kind: str) -> int:
        key = (self.string(name), self.string(file), self.string(module), KINDS.index(kind))
        index = self.rows.get(key)
        if index is None:
            index = self.rows[key] = len(self.rows)
        return index

    def path(self, sym: Symbolized) -> list[tuple[int, int]]:
        path = self.paths.get(id(sym))
        if path is None:
            module = sym.module
            if module is None and sym.kind is FrameKind.KERNEL:
                module = KERNEL_MODULE
            module_path = module.path if module is not None else ""
            path = self.paths[id(sym)] = [
                (self.frame(f.function, f.file, module_path, sym.kind.value), f.line) for f in reversed(sym.frames)
            ]
        return path


def flame_data(profile: Profile) -> dict[str, object]:
    """The JSON-ready flame graph data of ``profile`` (layout in the module docstring)."""
    table = _FrameTable()
    tree = _Tree()
    for sample in profile.samples:
        tree.add(_steps(table, sample), sample.count)
    start_s = profile.start_ns // 1_000_000_000
    meta = {
        "host": profile.host,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_s)),
        "start_unix_ms": profile.start_ns // 1_000_000,
        "duration_ns": profile.duration_ns,
        "frequency_hz": profile.frequency_hz,
        "period_ns": profile.period_ns,
        "samples": profile.total_samples,
        "counters": dict(sorted(profile.counters.items())),
    }
    strings = list(table.strings)
    frames = [list(key) for key in table.rows]
    return {
        "format": FORMAT,
        "meta": meta,
        "strings": strings,
        "kinds": list(KINDS),
        "frames": frames,
        "tree": tree.columns(),
    }


def render_html(profile: Profile) -> str:
    """The flame graph page of ``profile``: one file with its data, script and style inline."""
    package = resources.files("agent.exporters")
    template = package.joinpath("flamegraph.html").read_text(encoding="utf-8")
    script = package.joinpath("flamegraph.js").read_text(encoding="utf-8")
    data = json.dumps(flame_data(profile), separators=(",", ":"), ensure_ascii=False).translate(_JSON_ESCAPES)
    title = html.escape(f"hostflame: {profile.host}")
    script = script.replace("</script", "<\\/script")
    values = {"TITLE": title, "DATA": data, "SCRIPT": script}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)  # one pass: inserted text is not rescanned


def _steps(table: _FrameTable, sample: ProfileSample) -> list[tuple[int, int]]:
    """(frame, line) from the root down: the process, then every frame, outermost first."""
    comm = next((value for key, value in sample.labels if key == "comm"), "")
    steps = [(table.frame(comm, "", "", PROCESS_KIND), 0)] if comm else []
    for sym in reversed(sample.stack):
        steps.extend(table.path(sym))
    return steps
