"""The collector: a user stack is cut where a frame-pointer walk left the program's code, and
a stack seen again within an interval costs a count, not a symbolization."""

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
    # AND the next interval symbolizes afresh (its processes' binaries count as used again)
    collector.add([sample((0x1000, 0x2000), 1)])
    assert symbolizer.user_calls == 3
