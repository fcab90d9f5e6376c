"""The hottest-functions table: self samples (leaf) and total samples (anywhere on the stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.model import FrameKind, Module
from agent.pprof import build_pprof
from agent.report import FunctionShare, format_top, top_functions
from tests.pprof_cli import run_pprof
from tests.profile_factory import APP, LIBC, make_profile, sample, sym

MAIN = sym(APP.start + 0x10, APP, "main")
WORK = sym(APP.start + 0x20, APP, "hash_inl", "work")
MEMCPY = sym(LIBC.start + 0x30, LIBC, "memcpy")
SYSCALL = sym(0xFFFFFFFF81000040, None, "do_syscall_64", kind=FrameKind.KERNEL)
RECURSE = sym(APP.start + 0x40, APP, "walk")


def profile():  # type: ignore[no-untyped-def]
    # 10 samples: memcpy leaf 6 (under work 4, directly under main 2), syscall leaf 3, recursion 1
    return make_profile(
        sample(MEMCPY, WORK, MAIN, count=4),
        sample(MEMCPY, MAIN, count=2),
        sample(SYSCALL, MEMCPY, MAIN, count=3),
        sample(RECURSE, RECURSE, RECURSE, MAIN, count=1),
    )


def test_functions_rank_by_self_samples_with_total_shares() -> None:
    top = top_functions(profile(), 3)
    assert top == [
        FunctionShare("memcpy", LIBC.path, FrameKind.NATIVE, 6, 9, 0.6, 0.9),
        FunctionShare("do_syscall_64", "[kernel.kallsyms]", FrameKind.KERNEL, 3, 3, 0.3, 0.3),
        FunctionShare("walk", APP.path, FrameKind.NATIVE, 1, 1, 0.1, 0.1),  # recursion counted once
    ]


def test_callers_without_self_samples_follow_by_total() -> None:
    names = [(f.function, f.self_samples, f.total_samples) for f in top_functions(profile(), 10)]
    assert names[3:] == [("main", 0, 10), ("hash_inl", 0, 4), ("work", 0, 4)]


def test_same_name_in_two_modules_is_two_functions() -> None:
    other = Module(path="/usr/bin/other", build_id=b"", start=0, end=0x1000, file_offset=0)
    top = top_functions(make_profile(sample(MAIN, count=1), sample(sym(0x10, other, "main"), count=2)), 5)
    assert [(f.function, f.module, f.self_samples) for f in top] == [("main", "/usr/bin/other", 2),
                                                                    ("main", APP.path, 1)]


def test_self_counts_agree_with_google_pprof(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN the same profile as pprof WHEN both rank by flat samples THEN the counts agree
    path = tmp_path / "p.pb.gz"
    path.write_bytes(build_pprof(profile()))
    out = run_pprof(pprof_tool, "-top", "-sample_index=samples", "-symbolize=none", path)
    pprof_flat = {line.split()[-1]: (int(line.split()[0]), int(line.split()[3]))
                  for line in out.splitlines() if line.strip() and line.split()[-1] in {"memcpy", "walk", "main"}}
    ours = {f.function: (f.self_samples, f.total_samples) for f in top_functions(profile(), 10)}
    assert pprof_flat == {name: ours[name] for name in pprof_flat} and len(pprof_flat) == 3


def test_format_top_prints_a_header_and_one_row_per_function() -> None:
    text = format_top(top_functions(profile(), 2), total_samples=10)
    assert text.splitlines() == [
        "10 samples; the 2 hottest functions by self samples",
        "    self  self% total%  module               function",
        "       6  60.0%  90.0%  libc.so.6            memcpy",
        "       3  30.0%  30.0%  [kernel.kallsyms]    do_syscall_64",
    ]


def test_format_top_without_total_leaves_it_out() -> None:
    assert format_top(top_functions(profile(), 1)).splitlines()[0] == "the 1 hottest functions by self samples"


def test_format_top_of_nothing_says_so() -> None:
    assert format_top(top_functions(make_profile(), 15)) == "no samples\n"


@pytest.mark.parametrize("n", [0, 1])
def test_n_limits_the_rows(n: int) -> None:
    assert len(top_functions(profile(), n)) == n
