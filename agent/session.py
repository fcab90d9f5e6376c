"""Wiring of one profiling session: sampler -> drain -> processes -> symbolizer -> collector.

In: a loaded sampler and the session's settings. Out: ``Profile`` values, one per call to
``take_profile``. ``record`` and ``run`` both drive this; neither knows the stages inside.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agent.bpf_abi import ProcessEvent
from agent.collect import Collector, SymbolizerLike
from agent.drain import Drainer, DrainStats, Sampler
from agent.model import ProcessInfo, Profile
from agent.processes import ProcessRegistry

log = logging.getLogger(__name__)

EVENT_POLL_MS = 100  # how long one tick may wait for process events
DRAIN_EVERY_S = 1.0  # counts and stacks are read this often, whatever the interval


@dataclass(frozen=True)
class SessionSettings:
    frequency_hz: int = 99
    proc_root: Path = Path("/proc")
    host: str = ""
    drain_every_s: float = DRAIN_EVERY_S


class Session:
    def __init__(self, sampler: Sampler, symbolizer: SymbolizerLike, settings: SessionSettings,
                 pin: Callable[[ProcessInfo], None] | None = None, shed: Callable[[], None] | None = None):
        self.settings = settings
        self._sampler = sampler
        self._symbolizer = symbolizer
        self._shed = shed or symbolizer.forget_unused
        self.registry = ProcessRegistry(settings.proc_root, on_snapshot=pin)
        self.collector = Collector(self.registry, symbolizer)
        self.drainer = Drainer(sampler, self._on_events)
        self._host = settings.host or socket.gethostname()
        self._interval_start_ns = time.time_ns()
        self._interval_start_mono = time.monotonic()
        self._last_drain = time.monotonic()
        self._counters_at_start: dict[str, int] = {}

    def start(self) -> None:
        """Call right after the sampler is attached: the first interval starts now."""
        self._interval_start_ns = time.time_ns()
        self._interval_start_mono = time.monotonic()
        self._last_drain = self._interval_start_mono

    def _on_events(self, events: list[ProcessEvent]) -> None:
        for event in events:
            self.registry.on_event(event)

    def tick(self, max_wait_s: float) -> None:
        """Wait up to ``max_wait_s`` for process events (snapshotting new processes at
        once), and drain when a drain is due."""
        timeout_ms = max(0, min(EVENT_POLL_MS, int(max_wait_s * 1000)))
        self._on_events(self._sampler.poll_events(timeout_ms))
        if time.monotonic() - self._last_drain >= self.settings.drain_every_s:
            self.drain()

    def drain(self) -> None:
        self.collector.add(self.drainer.drain())
        self._symbolizer.release_when_idle()  # DWARF and mapped pages, once a burst of new addresses is over
        self._last_drain = time.monotonic()

    def final_drain(self) -> None:
        """After sampling stopped: events, then both generations."""
        self._on_events(self._sampler.poll_events(0))
        self.collector.add(self.drainer.drain_all())

    def stats(self) -> DrainStats:
        return self.drainer.stats()

    def set_frequency(self, frequency_hz: int) -> None:
        """The sampler now runs at ``frequency_hz``: profiles taken from now on say so. Take
        the profile of the old frequency first, so each profile has one sampling period."""
        self.settings = replace(self.settings, frequency_hz=frequency_hz)

    def shed_caches(self) -> None:
        """Give memory back: the symbolizer's caches go (``shed``; by default only what no
        live process used this interval)."""
        self._shed()

    def take_profile(self, ended_mono: float | None = None, extra_counters: dict[str, int] | None = None) -> Profile:
        """The interval since the last take (or the start), as one Profile. ``ended_mono``
        (time.monotonic()) is when sampling stopped, when it stopped before this call;
        ``extra_counters`` (agent telemetry) join the BPF counters in the profile's comments."""
        now_mono = time.monotonic()
        now_ns = time.time_ns()
        if ended_mono is not None:
            now_ns -= int((now_mono - ended_mono) * 1e9)
            now_mono = ended_mono
        totals = self.stats().counters
        interval_counters = {k: v - self._counters_at_start.get(k, 0) for k, v in totals.items()}
        self._counters_at_start = totals
        interval_counters.update(extra_counters or {})
        profile = self.collector.take(
            start_ns=self._interval_start_ns,
            duration_ns=int((now_mono - self._interval_start_mono) * 1e9),
            frequency_hz=self.settings.frequency_hz,
            host=self._host,
            counters=interval_counters,
        )
        self._interval_start_ns = now_ns
        self._interval_start_mono = now_mono
        self._symbolizer.forget_unused()  # close binaries no process used this interval
        return profile
