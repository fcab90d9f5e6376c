"""The drain's protocol with the sampler: flip first, read only the idle generation, resolve
stacks before clearing them, and account for every sample. The real kernel proof of the same
balance is tests/integration/test_record.py; this pins the order of operations."""

from __future__ import annotations

import errno

from agent import bpf_abi
from agent.bpf_abi import CountEntry, ProcessEvent
from agent.drain import Drainer


class ScriptedSampler:
    """Two generations of counts and stacks held in dicts; every call is logged."""

    def __init__(self) -> None:
        self.gen = 0
        self.counts: list[list[CountEntry]] = [[], []]
        self.stacks: list[dict[int, tuple[int, ...]]] = [{}, {}]
        self.calls: list[str] = []
        self.counters = [0] * bpf_abi.COUNTER_SIZE

    def generation(self) -> int:
        return self.gen

    def set_generation(self, generation: int) -> None:
        self.calls.append(f"flip->{generation}")
        self.gen = generation

    def take_counts(self, generation: int) -> list[CountEntry]:
        self.calls.append(f"take{generation}")
        assert generation != self.gen, "read the generation BPF is writing"
        out, self.counts[generation] = self.counts[generation], []
        return out

    def read_stack(self, generation: int, stack_id: int) -> tuple[int, ...]:
        self.calls.append(f"stack{generation}:{stack_id}")
        return self.stacks[generation].get(stack_id, ())

    def clear_stacks(self, generation: int) -> None:
        self.calls.append(f"clear{generation}")
        self.stacks[generation] = {}

    def read_counters(self) -> tuple[int, ...]:
        return tuple(self.counters)

    def read_counter(self, index: int) -> int:
        self.calls.append(f"counter{index}")
        return self.counters[index]

    def poll_events(self, timeout_ms: int) -> list[ProcessEvent]:
        self.calls.append("events")
        return []

    def record(self, generation: int, entry: CountEntry) -> None:
        self.counts[generation].append(entry)
        self.counters[bpf_abi.COUNTER_TAKEN] += entry.count
        self.counters[bpf_abi.COUNTER_COUNTED] += entry.count
        self.counters[bpf_abi.COUNTER_NEW_KEYS] += 1


def entry(user: int, kernel: int, count: int) -> CountEntry:
    return CountEntry(pid=10, tid=11, incarnation=5, user_stack_id=user, kernel_stack_id=kernel, comm="w",
                      count=count)


def test_drain_flips_then_reads_the_idle_generation_and_resolves_stacks_once() -> None:
    # GIVEN generation 0 holding two entries that share a user stack
    s = ScriptedSampler()
    s.stacks[0] = {1: (0x401000, 0x401100), 2: (0xFFFF0001,)}
    s.record(0, entry(1, 2, 3))
    s.record(0, entry(1, -errno.EFAULT, 4))
    # WHEN drained
    out = Drainer(s, lambda _events: None).drain()
    # THEN the flip came first, events before counts, each stack was read once, then cleared
    assert s.calls == ["flip->1", f"counter{bpf_abi.COUNTER_NEW_KEYS}", "events", "take0", "stack0:1", "stack0:2",
                       "clear0"]
    assert [(d.user_addrs, d.kernel_addrs, d.kernel_stack_error, d.count) for d in out] == [
        ((0x401000, 0x401100), (0xFFFF0001,), 0, 3),
        ((0x401000, 0x401100), (), -errno.EFAULT, 4),
    ]


def test_drain_all_reads_both_generations_and_balances() -> None:
    s = ScriptedSampler()
    s.stacks[0] = {1: (0x1,)}
    s.stacks[1] = {1: (0x2,)}
    s.record(0, entry(1, -errno.EFAULT, 2))
    s.record(1, entry(1, -errno.EFAULT, 5))
    drainer = Drainer(s, lambda _events: None)
    out = drainer.drain_all()
    assert sorted(d.count for d in out) == [2, 5]
    stats = drainer.stats()
    assert stats.drained == 7 and stats.balanced and stats.stacks_missing == 0


def test_a_stack_id_missing_from_its_map_is_counted() -> None:
    s = ScriptedSampler()
    s.record(0, entry(9, -errno.EFAULT, 6))
    drainer = Drainer(s, lambda _events: None)
    drainer.drain()
    assert drainer.stats().stacks_missing == 6


def test_keys_since_drain_counts_the_keys_made_after_the_last_flip() -> None:
    # GIVEN two keys in generation 0, drained, then three in generation 1
    s = ScriptedSampler()
    drainer = Drainer(s, lambda _events: None)
    s.record(0, entry(-errno.EFAULT, -errno.EFAULT, 1))
    s.record(0, entry(-errno.EFAULT, -errno.EFAULT, 1))
    assert drainer.keys_since_drain() == 2
    drainer.drain()
    for _ in range(3):
        s.record(1, entry(-errno.EFAULT, -errno.EFAULT, 4))
    # THEN only the three waiting in the maps count
    assert drainer.keys_since_drain() == 3
