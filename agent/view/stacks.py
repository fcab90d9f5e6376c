"""Reading any pprof back into plain stacks for the viewer, speedscope and folded outputs.

Stage: after the profile builder (or any other program that writes pprof: Go's runtime,
Google's pprof, other profilers). In: a decoded ``perftools.profiles.Profile`` message.
Out: a ``StackProfile``: one frame table and samples as root-first frame paths with a count
and their labels, plus the facts the viewer shows (host, start, duration, frequency, counters).

Frame kinds are not in pprof, so they are inferred: ``kernel`` for the kernel's mapping
(``[kernel.kallsyms]``, ``[kernel]``, ``vmlinux``) or a kernel-half address, ``jit`` for
anonymous or perf-map code and ``[jit] 0x..`` names, ``inlined`` for every line of a location
but its last (outermost) one, ``native`` otherwise; a process (the ``comm`` label) is a frame
of kind ``process`` at the root of its samples. The value shown is the ``samples`` sample
type when there is one, else the default sample type, else the last one (what pprof does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "FrameRow", "StackProfile", "StackSample", "read_stacks"]

KINDS = ("process", "kernel", "native", "jit", "inlined", "unknown")
KERNEL_PATHS = ("[kernel.kallsyms]", "[kernel]", "vmlinux")
KERNEL_HALF = 0xFFFF800000000000
_COUNTER = re.compile(r"^([A-Za-z_][\w.]*)=(-?\d+)$")
_HOST = re.compile(r"^hostflame: host=(.*)$")


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One distinct frame: function name, source file, module (binary path) and kind (in KINDS)."""

    name: str
    file: str
    module: str
    kind: str


@dataclass(frozen=True, slots=True)
class StackSample:
    """One pprof sample: frame indexes root first, the source line of each (0 unknown), labels."""

    frames: tuple[int, ...]
    lines: tuple[int, ...]
    value: int
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StackProfile:
    """A pprof as the viewer needs it; ``unit`` is the unit of ``StackSample.value``."""

    frames: tuple[FrameRow, ...]
    samples: tuple[StackSample, ...]
    sample_type: str  # e.g. "samples", "cpu", "alloc_space"
    unit: str  # e.g. "count", "nanoseconds", "bytes"
    host: str
    start_ns: int
    duration_ns: int
    period_ns: int  # 0 when the period is not in nanoseconds
    counters: dict[str, int] = field(default_factory=dict)
    comments: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(s.value for s in self.samples)

    @property
    def frequency_hz(self) -> float:
        return 1e9 / self.period_ns if self.period_ns else 0.0


def _value_index(message: Any, strings: list[str]) -> int:
    types = [strings[t.type] for t in message.sample_type]
    if not types:
        return -1
    if "samples" in types:
        return types.index("samples")
    default = strings[message.default_sample_type] if message.default_sample_type else ""
    return types.index(default) if default in types else len(types) - 1


class _Frames:
    def __init__(self) -> None:
        self.rows: dict[FrameRow, int] = {}

    def index(self, row: FrameRow) -> int:
        found = self.rows.get(row)
        if found is None:
            found = self.rows[row] = len(self.rows)
        return found


def _mapping_kinds(message: Any, strings: list[str]) -> dict[int, tuple[str, str]]:
    """mapping id -> (module path, kind of its code)."""
    kinds = {}
    for mapping in message.mapping:
        path = strings[mapping.filename]
        if path in KERNEL_PATHS or mapping.memory_start >= KERNEL_HALF:
            kind = "kernel"
        elif not path or path.startswith(("[anon", "//anon", "/tmp/perf-", "[jit")):
            kind = "jit"
        else:
            kind = "native"
        kinds[mapping.id] = (path, kind)
    return kinds


def _locations(message: Any, strings: list[str], frames: _Frames) -> dict[int, list[tuple[int, int]]]:
    """location id -> [(frame, line)] outermost first (root side first)."""
    functions = {f.id: (strings[f.name] or strings[f.system_name], strings[f.filename]) for f in message.function}
    mappings = _mapping_kinds(message, strings)
    out: dict[int, list[tuple[int, int]]] = {}
    for loc in message.location:
        module, kind = mappings.get(loc.mapping_id, ("", "unknown"))
        if loc.address >= KERNEL_HALF:
            kind = "kernel"
        path: list[tuple[int, int]] = []
        last = len(loc.line) - 1
        for position in range(last, -1, -1):
            line = loc.line[position]
            name, file = functions.get(line.function_id, ("", ""))
            if not name:
                name = _placeholder(module, loc.address)
            frame_kind = kind
            if name.startswith("[jit]"):
                frame_kind = "jit"
            elif position < last and kind == "native":
                frame_kind = "inlined"
            path.append((frames.index(FrameRow(name, file, module, frame_kind)), line.line))
        if not path:
            name = _placeholder(module, loc.address)
            path.append((frames.index(FrameRow(name, "", module, kind)), 0))
        out[loc.id] = path
    return out


def _placeholder(module: str, address: int) -> str:
    base = module.rsplit("/", 1)[-1] if module else ""
    return f"{base}+0x{address:x}" if base else f"0x{address:x}"


def _labels(sample: Any, strings: list[str]) -> tuple[tuple[str, str], ...]:
    labels: list[tuple[str, str]] = []
    for label in sample.label:
        key = strings[label.key]
        if label.str:
            labels.append((key, strings[label.str]))
        else:
            unit = strings[label.num_unit] if label.num_unit else ""
            labels.append((key, f"{label.num}{' ' + unit if unit else ''}"))
    values = dict(labels)
    if "comm" in values and "pid" in values:
        labels.append(("process", f"{values['comm']} [{values['pid']}]"))
    return tuple(sorted(labels))


def read_stacks(message: Any) -> StackProfile:
    """The ``StackProfile`` of a decoded pprof message (any producer)."""
    strings = list(message.string_table)
    frames = _Frames()
    locations = _locations(message, strings, frames)
    value_at = _value_index(message, strings)
    samples = []
    label_cache: dict[bytes, tuple[tuple[str, str], ...]] = {}
    for sample in message.sample:
        value = sample.value[value_at] if 0 <= value_at < len(sample.value) else 0
        if value == 0:
            continue
        key = b"".join(label.SerializeToString() for label in sample.label)
        labels = label_cache.get(key)
        if labels is None:
            labels = label_cache[key] = _labels(sample, strings)
        path: list[tuple[int, int]] = []
        comm = next((v for k, v in labels if k == "comm"), "")
        if comm:
            path.append((frames.index(FrameRow(comm, "", "", "process")), 0))
        for location_id in reversed(sample.location_id):
            path.extend(locations.get(location_id, ()))
        samples.append(StackSample(tuple(f for f, _ in path), tuple(n for _, n in path), value, labels))
    host, counters = "", {}
    comments = tuple(strings[c] for c in message.comment)
    for comment in comments:
        if (match := _HOST.match(comment)) is not None:
            host = match.group(1)
        elif (match := _COUNTER.match(comment)) is not None:
            counters[match.group(1)] = int(match.group(2))
    sample_type, unit = ("samples", "count")
    if value_at >= 0:
        chosen = message.sample_type[value_at]
        sample_type, unit = strings[chosen.type], strings[chosen.unit]
    period_ns = message.period if strings[message.period_type.unit] == "nanoseconds" else 0
    return StackProfile(frames=tuple(frames.rows), samples=tuple(samples), sample_type=sample_type, unit=unit,
                        host=host, start_ns=message.time_nanos, duration_ns=message.duration_nanos,
                        period_ns=period_ns, counters=counters, comments=comments)
