"""The viewer's data: one or two ``StackProfile`` values as the JSON the page's script reads.

Stage: a viewer format. In: ``StackProfile`` (one, or base and new for a diff). Out: a dict,
``"format": "hostflame-flame/2"``:
- ``meta``: facts of the (new) profile: host, start (ISO 8601 UTC) and start_unix_ms,
  duration_ns, frequency_hz, period_ns, sample_type, unit, total, counters, lost (samples the
  kernel side dropped: ``lost_counts_map_full``), stacks_lost (samples kept with a
  placeholder because their stack was lost), source (a file name). A diff adds ``base_meta``.
- ``strings``; ``kinds``; ``frames``: ``[name, file, module, kind]`` (string indexes, kind index).
- ``tree``: the merged call tree as columns ``frame``, ``line``, ``up``; node 0 is the root
  (frame -1), a parent comes before its children and ``up`` is how far before (node index
  minus parent index, 1 for the root: small numbers keep the page ~30 % smaller than
  indexes); ``line`` is 0 unless every sample through the node shares one line.
- ``samples``: columns ``node`` (the leaf node of the sample's path), ``value``, ``labels``
  (an index into ``labelsets``); samples with the same node and labels are merged.
  A diff has ``base_samples`` too, over the same tree; there a frame's module is known by
  its file name, so two builds or installs of one program (other paths) line up.
- ``labelsets``: each a flat list ``[key, value, key, value, ...]`` of string indexes;
  ``labelkeys``: the label keys, most useful first (process, comm, container_id, ...).
The script computes every node's value from the samples of the label value selected.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from agent.view.stacks import KINDS, StackProfile

__all__ = ["FORMAT", "LOST_COUNTER", "STACK_LOST_COUNTERS", "diff_data", "view_data"]

FORMAT = "hostflame-flame/2"
LOST_COUNTER = "lost_counts_map_full"
STACK_LOST_COUNTERS = ("kernel_stack_collision", "kernel_stack_map_full", "user_stack_collision",
                       "user_stack_map_full")
_KEY_ORDER = ("process", "comm", "container_id", "service_name", "pod", "namespace", "exe", "pid")


class _Builder:
    """Interns strings, frames, label sets and tree nodes shared by one or two profiles.

    With ``module_by_name`` a frame's module is known by its file name only (``/opt/v2/bin/app``
    is ``app``), so a diff compares two builds or installs of one program; the path shown is
    the first one seen.
    """

    def __init__(self, module_by_name: bool = False) -> None:
        self.module_by_name = module_by_name
        self.strings: dict[str, int] = {"": 0}
        self.frames: dict[tuple[str, str, str, str], int] = {}
        self.frame_rows: list[list[int]] = []
        self.labelsets: dict[tuple[tuple[str, str], ...], int] = {}
        self.frame = [-1]
        self.line = [0]
        self.parent = [-1]
        self.children: dict[int, int] = {}  # parent << 32 | frame -> node

    def string(self, value: str) -> int:
        index = self.strings.get(value)
        if index is None:
            index = self.strings[value] = len(self.strings)
        return index

    def add_samples(self, profile: StackProfile) -> dict[str, list[int]]:
        frame_map = [self._frame(row.name, row.file, row.module, row.kind) for row in profile.frames]
        merged: dict[tuple[int, int], int] = {}
        frames, lines, parents, children = self.frame, self.line, self.parent, self.children
        for sample in profile.samples:
            node = 0
            for frame_in, line in zip(sample.frames, sample.lines, strict=True):
                frame = frame_map[frame_in]
                key = node << 32 | frame
                child = children.get(key)
                if child is None:
                    child = children[key] = len(frames)
                    frames.append(frame)
                    lines.append(line)
                    parents.append(node)
                elif lines[child] != line:
                    lines[child] = 0
                node = child
            labels = self.labelsets.setdefault(sample.labels, len(self.labelsets))
            merged[(node, labels)] = merged.get((node, labels), 0) + sample.value
        return {"node": [n for n, _ in merged], "value": list(merged.values()), "labels": [ls for _, ls in merged]}

    def _frame(self, name: str, file: str, module: str, kind: str) -> int:
        key = (name, file, module.rsplit("/", 1)[-1] if self.module_by_name else module, kind)
        index = self.frames.get(key)
        if index is None:
            index = self.frames[key] = len(self.frame_rows)
            self.frame_rows.append([self.string(name), self.string(file), self.string(module), KINDS.index(kind)])
        return index

    def tables(self) -> dict[str, object]:
        keys = {k for labels in self.labelsets for k, _ in labels}
        ordered = [k for k in _KEY_ORDER if k in keys] + sorted(keys.difference(_KEY_ORDER))
        labelsets = [[self.string(part) for pair in labels for part in pair] for labels in self.labelsets]
        return {  # the label sets were interned above, so the string table is complete here
            "labelsets": labelsets,
            "labelkeys": ordered,
            "strings": list(self.strings),
            "kinds": list(KINDS),
            "frames": self.frame_rows,
            "tree": {"frame": self.frame, "line": self.line, "up": [i - p for i, p in enumerate(self.parent)]},
        }


def _meta(profile: StackProfile, source: str) -> dict[str, object]:
    start_s = profile.start_ns // 1_000_000_000
    counters = profile.counters
    return {
        "source": source,
        "host": profile.host,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_s)) if profile.start_ns else "",
        "start_unix_ms": profile.start_ns // 1_000_000,
        "duration_ns": profile.duration_ns,
        "frequency_hz": round(profile.frequency_hz, 3),
        "period_ns": profile.period_ns,
        "sample_type": profile.sample_type,
        "unit": profile.unit,
        "total": profile.total,
        "counters": dict(sorted(counters.items())),
        "lost": counters.get(LOST_COUNTER),
        "stacks_lost": sum(counters.get(k, 0) for k in STACK_LOST_COUNTERS) if counters else None,
    }


def view_data(profile: StackProfile, source: str = "") -> dict[str, object]:
    """The viewer data of one profile (layout in the module docstring)."""
    builder = _Builder()
    samples = builder.add_samples(profile)
    return {"format": FORMAT, "meta": _meta(profile, source), **builder.tables(), "samples": samples}


def diff_data(base: StackProfile, new: StackProfile, sources: Sequence[str] = ("", "")) -> dict[str, object]:
    """The viewer data of a differential flame graph: ``new`` against ``base`` over one tree."""
    builder = _Builder(module_by_name=True)
    base_samples = builder.add_samples(base)
    samples = builder.add_samples(new)
    return {"format": FORMAT, "meta": _meta(new, sources[1]), "base_meta": _meta(base, sources[0]),
            **builder.tables(), "samples": samples, "base_samples": base_samples}
