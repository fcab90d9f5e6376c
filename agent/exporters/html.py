"""HTML exporter: one self-contained interactive flame graph page (no network; opens from file://).

Stage: an exporter format. In: viewer data (``agent.view.flame``: one profile, or a diff of
two) or an ``agent.model.Profile`` (written as pprof and read back, so ``record`` and
``view`` show the same page). Out: HTML text made of the template ``flamegraph.html``, the
script ``flamegraph.js`` and the data as JSON inside ``<script type="application/json">``.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources

from agent.model import Profile
from agent.pprof import build_pprof_raw, parse_pprof
from agent.view.flame import view_data
from agent.view.stacks import StackProfile, read_stacks

__all__ = ["render_data_page", "render_html", "stacks_of"]

_PLACEHOLDER = re.compile(r"\{\{(TITLE|DATA|SCRIPT)\}\}")
# Inside <script type="application/json"> only "</script" or "<!--" could end the data early.
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def stacks_of(profile: Profile) -> StackProfile:
    """``profile`` as the viewer reads any pprof."""
    return read_stacks(parse_pprof(build_pprof_raw(profile)))


def render_html(profile: Profile) -> str:
    """The flame graph page of a recorded profile."""
    return render_data_page(view_data(stacks_of(profile)), f"hostflame: {profile.host}")


def render_data_page(data: dict[str, object], title: str) -> str:
    """The page showing ``data`` (``view_data`` or ``diff_data``): data, script and style inline."""
    package = resources.files("agent.exporters")
    template = package.joinpath("flamegraph.html").read_text(encoding="utf-8")
    script = package.joinpath("flamegraph.js").read_text(encoding="utf-8")
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).translate(_JSON_ESCAPES)
    script = script.replace("</script", "<\\/script")
    values = {"TITLE": html.escape(title), "DATA": text, "SCRIPT": script}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)  # one pass: inserted text is not rescanned
