"""The collector: a user stack is cut where a frame-pointer walk left the program's code, and
a stack seen again within an interval, or in the last one, costs a count, not a symbolization."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.collect import BROKEN_CHAIN, Collector, cut_at_broken_chain
from agent.drain import DrainedSample
from agent.model import Frame, FrameKind, Mapping, Module, Symbolized
from agent.processes import CLK_TCK, ProcessRegistry, boot_to_monotonic_ns
from symbolizer import Symbolizer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"
STARTED_NS = 123456 * 1_000_000_000 // CLK_TCK - boot_to_monotonic_ns()  # /proc/4242's start time

LIBC = Module(path="/usr/lib/libc.so.6", build_id=b"\1", start=0x1000, end=0x9000, file_offset=0)


def named(addr: int, name: str) -> Symbolized:
    return Symbolized(addr, FrameKind.NATIVE, LIBC, (Frame(function=name),), True)


def nowhere(addr: int) -> Symbolized:
    """What the symbolizer returns for an address where no code is (module None)."""
    return Symbolized(addr, FrameKind.UNKNOWN, None, (Frame(function="[unknown]"),), False)


def test_the_walk_is_cut_at_its_first_frame_outside_code() -> None:
    # GIVEN leaf, caller, a heap word, then whatever the walk found next
    stack = [named(0x1100, "leaf"), named(0x1200, "caller"), nowhere(0x55000010), named(0x1300, "main")]
    # THEN the heap word and everything above it become one [broken frame chain] frame
    assert cut_at_broken_chain(stack) == (stack[0], stack[1], BROKEN_CHAIN)


def test_an_unknown_leaf_is_kept_and_a_whole_stack_untouched() -> None:
    # a leaf outside the maps is the sampled instruction pointer: stale maps, not a bad walk
    stack = [nowhere(0x7000_0000), named(0x1200, "caller")]
    assert cut_at_broken_chain(stack) == tuple(stack)
    whole = [named(0x1100, "leaf"), named(0x1200, "main")]
    assert cut_at_broken_chain(whole) == tuple(whole)


class CountingSymbolizer:
    """The real symbolizer, counting the user stacks it is asked to symbolize."""

    def __init__(self) -> None:
        self.real = Symbolizer(kallsyms_path="/nonexistent-kallsyms", proc_root=str(FIXTURES))
        self.user_calls = 0

    def symbolize_user(self, pid: int, mappings: Sequence[Mapping], addrs: Sequence[int]) -> list[Symbolized]:
        self.user_calls += 1
        return self.real.symbolize_user(pid, mappings, addrs)

    def symbolize_kernel(self, addrs: Sequence[int]) -> list[Symbolized]:
        return self.real.symbolize_kernel(addrs)

    def forget_unused(self) -> None:
        self.real.forget_unused()


def sample(user: tuple[int, ...], count: int, tid: int = 4242) -> DrainedSample:
    return DrainedSample(pid=4242, tid=tid, incarnation=STARTED_NS + 1, comm="server", user_addrs=user,
                         kernel_addrs=(), user_stack_error=0, kernel_stack_error=0, count=count)


def test_a_stack_seen_again_in_the_interval_is_counted_not_symbolized_again() -> None:
    # GIVEN a collector over the canned /proc/4242
    symbolizer = CountingSymbolizer()
    collector = Collector(ProcessRegistry(FIXTURES), symbolizer)
    # WHEN five drains bring the same stack (from two threads) and one drain another stack
    for _ in range(5):
        collector.add([sample((0x1000, 0x2000), 3), sample((0x1000, 0x2000), 1, tid=4243)])
    collector.add([sample((0x1100, 0x2000), 2)])
    profile = collector.take(start_ns=0, duration_ns=1, frequency_hz=99, host="h", counters={})
    # THEN each distinct stack was symbolized once, and the profile holds every sample
    assert symbolizer.user_calls == 2
    assert sorted(s.count for s in profile.samples) == [2, 20]
    # AND the next interval symbolizes afresh a stack outside the process's maps (a re-read of
    # the maps may place it)
    collector.add([sample((0x1000, 0x2000), 1)])
    assert symbolizer.user_calls == 3


SERVER_TEXT, LIBC_TEXT = 0x55D0C0A02100, 0x7F1C2A228100  # in the canned maps' executable mappings


def test_a_stack_of_the_last_interval_in_the_same_snapshot_is_not_symbolized_again() -> None:
    # GIVEN a collector that took an interval with a stack wholly inside /proc/4242's maps
    symbolizer = CountingSymbolizer()
    collector = Collector(ProcessRegistry(FIXTURES), symbolizer)
    collector.add([sample((LIBC_TEXT, SERVER_TEXT), 3)])
    first = collector.take(start_ns=0, duration_ns=1, frequency_hz=99, host="h", counters={})
    # WHEN the next interval's drains bring it again, with a new stack
    collector.add([sample((LIBC_TEXT, SERVER_TEXT), 2)])
    collector.add([sample((LIBC_TEXT, SERVER_TEXT), 1), sample((LIBC_TEXT + 8, SERVER_TEXT), 4)])
    second = collector.take(start_ns=1, duration_ns=1, frequency_hz=99, host="h", counters={})
    # THEN only the new stack was symbolized, and the old one carries the same frames and labels
    assert symbolizer.user_calls == 2
    old = next(s for s in second.samples if s.count == 3)
    assert old.stack is first.samples[0].stack and old.labels == first.samples[0].labels
    assert old.process is first.samples[0].process
    assert sorted(s.count for s in second.samples) == [3, 4]


def test_raw_stacks_that_symbolize_to_the_same_frames_are_one_sample() -> None:
    # GIVEN two user stacks that differ only above a broken frame chain (heap words)
    symbolizer = CountingSymbolizer()
    collector = Collector(ProcessRegistry(FIXTURES), symbolizer)
    heap = 0x55D0C1BC4010
    collector.add([sample((LIBC_TEXT, heap, SERVER_TEXT), 2), sample((LIBC_TEXT, heap + 8), 5)])
    # WHEN the interval is taken THEN they are one sample of 7, ending in [broken frame chain]
    profile = collector.take(start_ns=0, duration_ns=1, frequency_hz=99, host="h", counters={})
    assert [(s.count, s.stack[-1]) for s in profile.samples] == [(7, BROKEN_CHAIN)]
    assert profile.counters["user_stacks_cut"] == 7
