"""Wiring of one profiling session: sampler -> drain -> processes -> symbolizer -> collector.

In: a loaded sampler and the session's settings. Out: ``Profile`` values, one per call to
``take_profile``. ``record`` and ``run`` both drive this; neither knows the stages inside.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agent import bpf_abi
from agent.bpf_abi import ProcessEvent
from agent.collect import Collector, SymbolizerLike
from agent.drain import Drainer, DrainStats, Sampler
from agent.model import ProcessInfo, Profile
from agent.processes import ProcessRegistry

log = logging.getLogger(__name__)

# After a wake that brought process events, the next read waits until this long after it: a
# burst of churn is read in batches, and a new process is snapshotted at most this late.
EVENT_BATCH_S = 0.1
DRAIN_CHECK_S = 1.0  # how often the maps' fill is looked at (one bpf() call)
# New counts-map keys since the last drain that make one due. Each brings at most two new
# stacks, so the stack map is never much above 1/32 full: its collisions (-EEXIST, a lost
# stack) grow with its fill. A steady workload, whose stacks repeat, drains at the cut only.
DRAIN_NEW_KEYS = bpf_abi.STACK_MAP_SIZE // 64


@dataclass(frozen=True)
class SessionSettings:
    frequency_hz: int = 99
    proc_root: Path = Path("/proc")
    host: str = ""
    drain_check_s: float = DRAIN_CHECK_S
    drain_new_keys: int = DRAIN_NEW_KEYS


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
        self._next_check = self._interval_start_mono + settings.drain_check_s
        self._events_at = -math.inf  # when the last read that found events ended
        self._counters_at_start: dict[str, int] = {}

    def start(self) -> None:
        """Call right after the sampler is attached: the first interval starts now."""
        self._interval_start_ns = time.time_ns()
        self._interval_start_mono = time.monotonic()
        self._next_check = self._interval_start_mono + self.settings.drain_check_s

    def _on_events(self, events: list[ProcessEvent]) -> None:
        for event in events:
            self.registry.on_event(event)

    def tick(self, max_wait_s: float) -> None:
        """Wait up to ``max_wait_s``, and no later than the next look at the maps, for process
        events (snapshotting new processes at once); then drain if enough new stacks wait in
        the maps. A host where nothing starts wakes the agent once per ``drain_check_s``."""
        now = time.monotonic()
        wait = max(0.0, min(max_wait_s, self._next_check - now))
        hold = self._events_at + EVENT_BATCH_S - now
        if hold > 0:  # events a moment ago: let the rest of a burst gather, then read it at once
            time.sleep(min(hold, wait))
            events = self._sampler.poll_events(0)
        else:
            events = self._sampler.poll_events(math.ceil(wait * 1000))
        if events:
            self._events_at = time.monotonic()
            self._on_events(events)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.settings.drain_check_s
            if self.drainer.keys_since_drain() >= self.settings.drain_new_keys:
                self.drain()

    def drain(self) -> None:
        self.collector.add(self.drainer.drain())
        self._symbolizer.release_when_idle()  # DWARF and mapped pages, once a burst of new addresses is over

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
