"""hostflame doctor: frame health per binary from a profile, and causes judged on real files.

The profile is hand-built (its shares are known by construction); the files are compiled now
(tests/unit/symbolizer fixtures: with -g, stripped, stripped with a debug link) and what they
carry is read back with readelf.
"""

from __future__ import annotations

from pathlib import Path

from sym_build import Binaries, DebugVariants

from agent.doctor import JIT, KERNEL, UNKNOWN, format_report, frame_health
from agent.model import FrameKind
from symbolizer.diagnose import DEBUG_FIX, diagnose_binary
from tests.profile_factory import APP, LIBC, make_profile, sample, sym
from tests.profile_factory import KERNEL as KERNEL_MODULE


def test_frame_health_counts_each_sampled_address_weighted_by_samples() -> None:
    # GIVEN 3 samples in app (with a line), 1 in libc without a line, a kernel frame, an
    # unnamed app frame, and a JIT frame
    profile = make_profile(
        sample(sym(0x401000, APP, "work", file="a.c", line=3), sym(0xFFFFFFFF81000010, KERNEL_MODULE, "sys",
                                                                     kind=FrameKind.KERNEL), count=3),
        sample(sym(0x7F0000001000, LIBC, "memcpy"), sym(0x401100, APP, "server+0x1100", named=False), count=1),
        sample(sym(0x10000, None, "[jit] 0x10000", kind=FrameKind.JIT, named=False), count=2),
    )
    # WHEN counted
    health = frame_health(profile)
    # THEN each binary has its frames, named and lined counts
    app = health[APP.path]
    assert (app.frames, app.named, app.lined) == (4, 3, 3)
    assert (health[LIBC.path].frames, health[LIBC.path].lined) == (1, 0)
    assert health[KERNEL].frames == 3 and health[KERNEL].named == 3
    assert health[JIT].frames == 2 and health[JIT].named == 0
    assert UNKNOWN not in health
    # AND the report lists them by frames, with the JIT cause and its fix
    report = format_report(health)
    assert report.index(APP.path) < report.index(JIT)
    assert "JIT code without a perf map" in report and "--perf-basic-prof" in report


def test_diagnose_files(binaries: Binaries, debug_variants: DebugVariants) -> None:
    # GIVEN a binary with -g, its --strip-all copy, and that copy with a .gnu_debuglink
    full = diagnose_binary(str(binaries.pie))
    stripped = diagnose_binary(str(debug_variants.stripped), debug_roots=())
    linked = diagnose_binary(str(debug_variants.linked), debug_roots=())
    # THEN the first lacks nothing, the second lacks both and says how to get them, the
    # third finds its debug file
    assert (full.has_symbols, full.has_lines, full.cause) == (True, True, "")
    assert (stripped.has_symbols, stripped.has_lines) == (False, False) and stripped.fix == DEBUG_FIX
    assert (linked.has_symbols, linked.has_lines, linked.cause) == (True, True, "")


def test_diagnose_missing_and_data_files(tmp_path: Path) -> None:
    assert "deleted" in diagnose_binary(str(tmp_path / "gone (deleted)")).cause
    data = tmp_path / "LC_CTYPE"
    data.write_bytes(b"\0" * 64)
    assert "not code" in diagnose_binary(str(data)).cause
