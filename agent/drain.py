"""Drain stage: lossless reads of the BPF counts and stacks, with loss accounting.

In: a loaded sampler (``Sampler`` protocol: the bcc-free interface of agent/bpf_loader.py).
Out: ``DrainedSample`` values (stacks resolved to addresses) and counter totals.

Lossless by construction: the BPF program writes one of two (counts, stacks) generations.
A drain flips the generation, waits for programs already running to finish, then reads
and clears the idle pair, which nothing writes any more. Stack ids are resolved before
their map is cleared. Every sample taken ends up counted, idle, filtered or lost by cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent import bpf_abi
from agent.bpf_abi import CountEntry, ProcessEvent

# A perf-event BPF program runs to completion in microseconds with preemption off; this is
# ample time for one that read the old generation to finish its writes.
FLIP_GRACE_S = 0.005


class Sampler(Protocol):
    def generation(self) -> int: ...
    def set_generation(self, generation: int) -> None: ...
    def take_counts(self, generation: int) -> list[CountEntry]: ...
    def read_stack(self, generation: int, stack_id: int) -> tuple[int, ...]: ...
    def clear_stacks(self, generation: int) -> None: ...
    def read_counters(self) -> tuple[int, ...]: ...
    def read_counter(self, index: int) -> int: ...
    def poll_events(self, timeout_ms: int) -> list[ProcessEvent]: ...


@dataclass(frozen=True, slots=True)
class DrainedSample:
    """A counts entry with its stacks resolved; ``pid`` is the tgid."""

    pid: int
    tid: int
    incarnation: int
    comm: str
    user_addrs: tuple[int, ...]  # leaf first; () when there is no user stack
    kernel_addrs: tuple[int, ...]  # leaf first; () when sampled in user mode
    user_stack_error: int  # 0, or the -errno bpf_get_stackid returned
    kernel_stack_error: int
    count: int


@dataclass(frozen=True)
class DrainStats:
    """Totals since the sampler was loaded."""

    counters: dict[str, int]  # bpf_abi.COUNTER_NAMES -> value
    drained: int  # samples read out of the counts maps
    stacks_missing: int  # samples whose stack id was absent from its map (should stay 0)

    @property
    def lost(self) -> int:
        return self.counters["lost_counts_map_full"]

    @property
    def balanced(self) -> bool:
        """taken = counted + idle + filtered + lost, and everything counted was drained."""
        c = self.counters
        return (
            c["taken"] == c["counted"] + c["idle"] + c["filtered"] + c["lost_counts_map_full"]
            and c["counted"] == self.drained
        )


class Drainer:
    def __init__(self, sampler: Sampler, on_events: Callable[[list[ProcessEvent]], None]):
        self._sampler = sampler
        self._on_events = on_events
        self._drained = 0
        self._stacks_missing = 0
        self._keys_at_flip = 0

    def keys_since_drain(self) -> int:
        """Counts-map keys BPF created since the last flip: the unique stacks waiting in the
        maps are at most twice this (one user, one kernel each). One bpf() call."""
        return self._sampler.read_counter(bpf_abi.COUNTER_NEW_KEYS) - self._keys_at_flip

    def drain(self) -> list[DrainedSample]:
        """Flip the generation and return everything the previous one recorded."""
        old = self._sampler.generation()
        self._sampler.set_generation(1 - old)
        self._keys_at_flip = self._sampler.read_counter(bpf_abi.COUNTER_NEW_KEYS)
        time.sleep(FLIP_GRACE_S)
        # Events announcing processes in these samples were sent before the samples were
        # counted: hand them on first so the registry snapshots before lookups.
        self._on_events(self._sampler.poll_events(0))
        return self._read_generation(old)

    def drain_all(self) -> list[DrainedSample]:
        """After sampling stopped: both generations, the current one first."""
        first = self.drain()
        return first + self.drain()

    def _read_generation(self, generation: int) -> list[DrainedSample]:
        entries = self._sampler.take_counts(generation)
        stacks: dict[int, tuple[int, ...]] = {}

        def resolve(stack_id: int) -> tuple[int, ...]:
            if stack_id < 0:
                return ()
            addrs = stacks.get(stack_id)
            if addrs is None:
                addrs = stacks[stack_id] = self._sampler.read_stack(generation, stack_id)
            return addrs

        out = []
        for e in entries:
            user = resolve(e.user_stack_id)
            kernel = resolve(e.kernel_stack_id)
            if (e.user_stack_id >= 0 and not user) or (e.kernel_stack_id >= 0 and not kernel):
                self._stacks_missing += e.count
            out.append(
                DrainedSample(
                    pid=e.pid,
                    tid=e.tid,
                    incarnation=e.incarnation,
                    comm=e.comm,
                    user_addrs=user,
                    kernel_addrs=kernel,
                    user_stack_error=min(e.user_stack_id, 0),
                    kernel_stack_error=min(e.kernel_stack_id, 0),
                    count=e.count,
                )
            )
            self._drained += e.count
        self._sampler.clear_stacks(generation)
        return out

    def stats(self) -> DrainStats:
        values = self._sampler.read_counters()
        return DrainStats(
            counters=dict(zip(bpf_abi.COUNTER_NAMES, values, strict=True)),
            drained=self._drained,
            stacks_missing=self._stacks_missing,
        )
