"""Folded-stacks exporter format (Brendan Gregg's FlameGraph input).

Stage: an exporter format. In: an ``agent.model.Profile``. Out: text, one line per distinct
stack, ``comm;root;...;leaf COUNT``, lines sorted, identical stacks merged.

The first element is the sample's ``comm`` label (left out when the sample has none); frames
follow root first. A ``Symbolized`` with inlined frames contributes outermost..innermost.
Suffixes follow FlameGraph's palettes: ``_[k]`` kernel, ``_[j]`` JIT, ``_[i]`` an inlined
(non-outermost) frame of native or unknown code. ``;`` in names becomes ``:`` and line breaks
become spaces, so every line stays parseable.
"""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import FrameKind, Profile, ProfileSample, Symbolized

__all__ = ["fold_stacks", "render_folded", "sanitize"]

_KIND_SUFFIX = {FrameKind.KERNEL: "_[k]", FrameKind.JIT: "_[j]"}
_INLINE_SUFFIX = "_[i]"
_UNSAFE = str.maketrans({";": ":", "\n": " ", "\r": " "})


def sanitize(name: str) -> str:
    """``name`` made safe for one element of a folded line (never empty)."""
    return name.translate(_UNSAFE) or "[unknown]"


def fold_stacks(profile: Profile) -> dict[str, int]:
    """Folded stack (without count) -> summed sample count."""
    folded: dict[str, int] = {}
    names: dict[int, list[str]] = {}  # id(Symbolized) -> its names, root side first
    for sample in profile.samples:
        parts = _comm(sample)
        for sym in reversed(sample.stack):
            sym_names = names.get(id(sym))
            if sym_names is None:
                sym_names = names[id(sym)] = list(_names(sym))
            parts.extend(sym_names)
        key = ";".join(parts)
        folded[key] = folded.get(key, 0) + sample.count
    return folded


def render_folded(profile: Profile) -> str:
    """The folded text of ``profile``: sorted ``stack COUNT`` lines, each ending in a newline."""
    folded = fold_stacks(profile)
    return "".join(f"{stack} {folded[stack]}\n" for stack in sorted(folded))


def _comm(sample: ProfileSample) -> list[str]:
    for key, value in sample.labels:
        if key == "comm":
            return [sanitize(value)]
    return []


def _names(sym: Symbolized) -> Iterator[str]:
    kind_suffix = _KIND_SUFFIX.get(sym.kind, "")
    outermost = len(sym.frames) - 1
    for index in range(outermost, -1, -1):
        suffix = kind_suffix or (_INLINE_SUFFIX if index < outermost else "")
        yield sanitize(sym.frames[index].function) + suffix
