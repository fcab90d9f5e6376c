"""Folded stacks: FlameGraph's ``comm;root;...;leaf COUNT`` lines, merged and sorted."""

from __future__ import annotations

from agent.folded import render_folded
from agent.model import FrameKind, ProfileSample
from tests.profile_factory import APP, KERNEL, LIBC, make_profile, sample, sym

MAIN = sym(APP.start + 0x10, APP, "main")
WORK = sym(APP.start + 0x20, APP, "hash_inl", "work")  # hash_inl inlined into work
MEMCPY = sym(LIBC.start + 0x30, LIBC, "memcpy")
SYSCALL = sym(KERNEL.start + 0x40, KERNEL, "do_syscall_64", kind=FrameKind.KERNEL)
JITTED = sym(0x3000, None, "Interpreter::run", kind=FrameKind.JIT)


def test_lines_are_root_first_with_comm_and_kind_suffixes() -> None:
    # GIVEN leaf-first stacks with a kernel leaf, an inlined frame and a JIT frame
    profile = make_profile(
        sample(SYSCALL, MEMCPY, WORK, MAIN, count=4),
        sample(JITTED, MAIN, count=1, comm="java"),
    )
    # WHEN rendered
    text = render_folded(profile)
    # THEN each line starts with comm, runs root to leaf, and marks kernel, inline and JIT frames
    assert text == (
        "java;main;Interpreter::run_[j] 1\n"
        "server;main;work;hash_inl_[i];memcpy;do_syscall_64_[k] 4\n"
    )


def test_identical_stacks_merge_even_across_pids() -> None:
    # GIVEN the same stack of one comm from two pids, and equal but distinct objects
    again = sym(MEMCPY.addr, LIBC, "memcpy")
    profile = make_profile(sample(MEMCPY, MAIN, count=2, pid=1), sample(again, MAIN, count=5, pid=2))
    # WHEN rendered THEN they are one line with the summed count
    assert render_folded(profile) == "server;main;memcpy 7\n"


def test_lines_are_sorted_by_stack() -> None:
    profile = make_profile(
        sample(MEMCPY, MAIN, count=1, comm="zsh"),
        sample(MAIN, count=2, comm="bash"),
        sample(MEMCPY, MAIN, count=3, comm="bash"),
    )
    assert render_folded(profile).splitlines() == ["bash;main 2", "bash;main;memcpy 3", "zsh;main;memcpy 1"]


def test_separators_in_names_are_sanitized() -> None:
    # GIVEN names and a comm holding ';' and line breaks
    odd = sym(0x10, APP, "operator;weird\nname\r")
    profile = make_profile(sample(odd, count=1, comm="a;b"))
    # WHEN rendered THEN one line, ';' only between frames, and the count after the last space
    assert render_folded(profile) == "a:b;operator:weird name  1\n"


def test_without_a_comm_label_the_stack_starts_at_the_root() -> None:
    profile = make_profile(ProfileSample(stack=(MEMCPY, MAIN), count=3, labels=()))
    assert render_folded(profile) == "main;memcpy 3\n"


def test_an_empty_profile_renders_nothing() -> None:
    assert render_folded(make_profile()) == ""
