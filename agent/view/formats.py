"""Text outputs of a ``StackProfile``: speedscope's JSON file format and folded stacks.

Stage: a viewer format. In: a ``StackProfile``. Out: text.
- speedscope (``.speedscope.json``, schema ``https://www.speedscope.app/file-format-schema.json``):
  one shared frame table (name, file, and line when every sample of the frame shares one), and
  one "sampled" profile per process (``comm`` label; one profile in all when there is none),
  stacks root first without the process frame, weights in the profile's unit.
- folded (``.folded``): ``comm;root;...;leaf VALUE`` lines as ``agent.folded`` writes them
  (kind suffixes ``_[k]`` kernel, ``_[j]`` JIT, ``_[i]`` inlined), merged and sorted.
"""

from __future__ import annotations

import json

from agent.folded import sanitize
from agent.view.stacks import StackProfile

__all__ = ["SPEEDSCOPE_SCHEMA", "render_speedscope", "render_stacks_folded"]

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_SPEEDSCOPE_UNITS = {"nanoseconds": "nanoseconds", "microseconds": "microseconds", "milliseconds": "milliseconds",
                     "seconds": "seconds", "bytes": "bytes"}
_FOLDED_SUFFIX = {"kernel": "_[k]", "jit": "_[j]", "inlined": "_[i]"}


def render_speedscope(profile: StackProfile, name: str = "hostflame") -> str:
    """speedscope's JSON file format for ``profile``."""
    process_frames = {i for i, row in enumerate(profile.frames) if row.kind == "process"}
    shared: dict[int, int] = {}  # our frame index -> speedscope frame index
    lines: dict[int, set[int]] = {}
    groups: dict[str, tuple[list[list[int]], list[int]]] = {}
    for sample in profile.samples:
        group = ""
        stack = []
        for frame, line in zip(sample.frames, sample.lines, strict=True):
            if frame in process_frames:
                group = profile.frames[frame].name
                continue
            index = shared.setdefault(frame, len(shared))
            lines.setdefault(index, set()).add(line)
            stack.append(index)
        stacks, weights = groups.setdefault(group, ([], []))
        stacks.append(stack)
        weights.append(sample.value)
    frames = []
    for frame, index in sorted(shared.items(), key=lambda item: item[1]):
        row = profile.frames[frame]
        entry: dict[str, object] = {"name": row.name or "[unknown]"}
        if row.file:
            entry["file"] = row.file
            seen = lines[index]
            if len(seen) == 1 and (only := next(iter(seen))) > 0:
                entry["line"] = only
        frames.append(entry)
    unit = _SPEEDSCOPE_UNITS.get(profile.unit, "none")
    profiles = []
    groups = groups or {"": ([], [])}  # speedscope wants a profile to show, even an empty one
    for group in sorted(groups):
        stacks, weights = groups[group]
        profiles.append({"type": "sampled", "name": group or name, "unit": unit, "startValue": 0,
                         "endValue": sum(weights), "samples": stacks, "weights": weights})
    document = {"$schema": SPEEDSCOPE_SCHEMA, "shared": {"frames": frames}, "profiles": profiles,
                "name": name, "exporter": "hostflame", "activeProfileIndex": 0}
    return json.dumps(document, separators=(",", ":"))


def render_stacks_folded(profile: StackProfile) -> str:
    """Folded stacks of ``profile``: sorted ``stack VALUE`` lines, each ending in a newline."""
    names = [sanitize(row.name) + _FOLDED_SUFFIX.get(row.kind, "") for row in profile.frames]
    folded: dict[str, int] = {}
    for sample in profile.samples:
        key = ";".join(names[f] for f in sample.frames)
        folded[key] = folded.get(key, 0) + sample.value
    return "".join(f"{stack} {folded[stack]}\n" for stack in sorted(folded))
