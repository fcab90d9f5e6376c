"""Exporters: where finished profiles go (files, a directory per interval, later Pyroscope, OTLP).

Stage: the last one. In: ``agent.model.Profile`` values, one per target per interval.
Out: files or network requests. Every exporter has the same small interface, ``Exporter``,
so the daemon hands each profile to a list of them without knowing what they are.
"""

from __future__ import annotations

from typing import Protocol

from agent.model import Profile

__all__ = ["Exporter"]


class Exporter(Protocol):
    """Takes finished profiles; ``close`` flushes and releases whatever it holds."""

    def export(self, profile: Profile) -> None: ...

    def close(self) -> None: ...
