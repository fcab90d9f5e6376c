"""A user stack is cut where a frame-pointer walk left the program's code."""

from __future__ import annotations

from agent.collect import BROKEN_CHAIN, cut_at_broken_chain
from agent.model import Frame, FrameKind, Module, Symbolized

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
