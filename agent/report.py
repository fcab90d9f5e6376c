"""Text summary of a profile: the hottest functions and their share of the samples.

Stage: an exporter format for the terminal. In: an ``agent.model.Profile``. Out: a list of
``FunctionShare`` (self = the function is the leaf, total = the function is anywhere on the
stack, each sample counted once per function) and the table the CLI prints.

A function is identified by its name and its module's path: ``main`` of two binaries are two
functions. Inlined frames count as functions of their own, as pprof shows them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from agent.model import FrameKind, Profile, Symbolized
from agent.pprof import KERNEL_MODULE

__all__ = ["FunctionShare", "format_top", "top_functions"]

_FunctionKey = tuple[str, str]  # (function name, module path)


@dataclass(frozen=True, slots=True)
class FunctionShare:
    """One function's samples; shares are fractions (0..1) of all the profile's samples."""

    function: str
    module: str  # the module's path ("[kernel.kallsyms]" for the kernel); "" when unknown
    kind: FrameKind
    self_samples: int
    total_samples: int
    self_share: float
    total_share: float


def top_functions(profile: Profile, n: int) -> list[FunctionShare]:
    """The ``n`` functions with the most self samples (ties: more total samples, then by name)."""
    self_counts: dict[_FunctionKey, int] = {}
    total_counts: dict[_FunctionKey, int] = {}
    kinds: dict[_FunctionKey, FrameKind] = {}
    for sample in profile.samples:
        if not sample.stack:
            continue
        leaf = _keys(sample.stack[0])[0]
        self_counts[leaf] = self_counts.get(leaf, 0) + sample.count
        seen: set[_FunctionKey] = set()
        for sym in sample.stack:
            for key in _keys(sym):
                if key not in seen:
                    seen.add(key)
                    kinds.setdefault(key, sym.kind)
                    total_counts[key] = total_counts.get(key, 0) + sample.count
    total = profile.total_samples or 1
    ranked = sorted(total_counts, key=lambda k: (-self_counts.get(k, 0), -total_counts[k], k))
    return [
        FunctionShare(
            function=key[0],
            module=key[1],
            kind=kinds[key],
            self_samples=self_counts.get(key, 0),
            total_samples=total_counts[key],
            self_share=self_counts.get(key, 0) / total,
            total_share=total_counts[key] / total,
        )
        for key in ranked[:n]
    ]


def format_top(shares: Sequence[FunctionShare], total_samples: int | None = None) -> str:
    """The table the CLI prints for ``top_functions``' result (ends with a newline)."""
    if not shares:
        return "no samples\n"
    header = f"the {len(shares)} hottest functions by self samples"
    if total_samples is not None:
        header = f"{total_samples} samples; {header}"
    lines = [header, f"{'self':>8} {'self%':>6} {'total%':>6}  {'module':<20} function"]
    for share in shares:
        module = _short_module(share.module)
        lines.append(
            f"{share.self_samples:>8} {share.self_share:>6.1%} {share.total_share:>6.1%}  {module:<20} {share.function}"
        )
    return "\n".join(lines) + "\n"


def _keys(sym: Symbolized) -> list[_FunctionKey]:
    module = sym.module
    if module is None and sym.kind is FrameKind.KERNEL:
        module = KERNEL_MODULE
    path = module.path if module is not None else ""
    return [(frame.function, path) for frame in sym.frames]


def _short_module(path: str) -> str:
    name = os.path.basename(path) or path or "?"
    return name if len(name) <= 20 else name[:19] + "~"
