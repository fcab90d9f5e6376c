"""The pprof builder, checked through Google's pprof (``-traces``, ``-raw``, ``-top``, ``-tags``)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from agent import pprof, pprof_wire
from agent.model import Frame, FrameKind, Module, Symbolized
from agent.pprof import build_pprof, build_pprof_raw, parse_pprof
from agent.proto import profile as pb
from tests.pprof_cli import run_pprof, traces
from tests.pprof_reference import reference_message
from tests.profile_factory import APP, KERNEL, LIBC, large_profile, make_profile, sample, sym

MAIN = sym(APP.start + 0x10, APP, "main", file="/src/main.c", line=10)
WORK = sym(APP.start + 0x20, APP, "hash_inl", "work", file="/src/work.c", line=20)  # hash_inl inlined into work
MEMCPY = sym(LIBC.start + 0x30, LIBC, "memcpy")
SYSCALL = sym(KERNEL.start + 0x40, None, "do_syscall_64", kind=FrameKind.KERNEL)  # kernel frame, no module


def two_stack_profile():  # type: ignore[no-untyped-def]
    return make_profile(
        sample(MEMCPY, WORK, MAIN, count=3),
        sample(SYSCALL, MEMCPY, MAIN, count=2, comm="other", pid=7),
        frequency_hz=99,
        counters={"lost_counts_map_full": 0, "samples_taken": 5},
    )


def write(tmp_path: Path, data: bytes, name: str = "cpu.pb.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_traces_show_the_stacks_counts_and_labels_put_in(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN two stacks: one through an inlined frame, one ending in a kernel frame without module
    profile = two_stack_profile()
    # WHEN the profile is built and pprof prints its samples
    path = write(tmp_path, build_pprof(profile))
    # THEN pprof shows every stack leaf first, inline frames marked, with the counts and labels
    assert traces(pprof_tool, path) == sorted([
        (("do_syscall_64", "memcpy", "main"), 2, (("comm", "other"), ("pid", "7"))),
        (("memcpy", "hash_inl (inline)", "work", "main"), 3, (("comm", "server"), ("pid", "42"))),
    ])


def test_raw_header_has_the_go_cpu_shape(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN a profile sampled at 99 Hz for 10 s
    path = write(tmp_path, build_pprof(two_stack_profile()))
    # WHEN pprof prints it raw
    raw = run_pprof(pprof_tool, "-raw", "-symbolize=none", path)
    # THEN the sample types, period (1e9 / 99 ns), time and duration are pprof's CPU profile shape
    assert "PeriodType: cpu nanoseconds\n" in raw
    assert "Period: 10101010\n" in raw
    assert "Time: 2023-11-14 22:13:20.123 +0000 UTC\n" in raw
    assert "Duration: 10s\n" in raw
    assert "samples/count cpu/nanoseconds[dflt]\n" in raw
    # AND each sample's values are [n, n * period]
    assert "          3   30303030: " in raw
    assert "          2   20202020: " in raw


def test_raw_mappings_carry_module_ranges_build_ids_and_flags(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN frames in libc (named), the app (files, lines, an inline) and the kernel (no module)
    path = write(tmp_path, build_pprof(two_stack_profile()))
    # WHEN pprof prints the mappings
    raw = run_pprof(pprof_tool, "-raw", "-symbolize=none", path)
    mappings = raw.split("Mappings\n", 1)[1].splitlines()
    # THEN each module is one mapping with its range, file offset, hex build id and what it has
    assert mappings == [
        "1: 0x7f0000000000/0x7f0000200000/0x28000 /usr/lib/libc.so.6 aabbcc01 [FN]",
        "2: 0x400000/0x500000/0x0 /opt/app/bin/server 0102030405 [FN][FL][LN][IN]",
        "3: 0x0/0x0/0x0 [kernel.kallsyms]  [FN]",
    ]


def test_top_cpu_time_is_samples_times_period(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN 5 samples at 99 Hz: 5 * 10101010 ns = 50.51 ms
    path = write(tmp_path, build_pprof(two_stack_profile()))
    # WHEN pprof ranks functions by the default sample type (cpu)
    top = run_pprof(pprof_tool, "-top", "-symbolize=none", path)
    # THEN memcpy has 3 of them flat and 5 cumulative, do_syscall_64 2 flat
    assert "Total samples = 50.51ms" in top
    assert "   30.30ms 60.00% 60.00%    50.51ms   100%  memcpy" in top
    assert "   20.20ms 40.00%   100%    20.20ms 40.00%  do_syscall_64" in top


def test_comments_name_the_host_and_the_counters(tmp_path: Path, pprof_tool: Path) -> None:
    path = write(tmp_path, build_pprof(two_stack_profile()))
    assert run_pprof(pprof_tool, "-comments", path).splitlines() == [
        "hostflame: host=node-1",
        "lost_counts_map_full=0",
        "samples_taken=5",
    ]


def test_tags_hold_string_and_numeric_labels(tmp_path: Path, pprof_tool: Path) -> None:
    path = write(tmp_path, build_pprof(two_stack_profile()))
    tags = run_pprof(pprof_tool, "-tags", "-sample_index=samples", path)
    assert " comm: Total 5.0\n" in tags and "3.0 (60.00%): server" in tags and "2.0 (40.00%): other" in tags
    assert " pid: Total 5.0\n" in tags and "3.0 (60.00%): 42" in tags and "2.0 (40.00%): 7" in tags


def test_tables_are_deduplicated_and_ids_are_index_plus_one() -> None:
    # GIVEN the same addresses as shared objects and as equal but distinct objects
    work_again = Symbolized(WORK.addr, WORK.kind, APP, WORK.frames, True)
    profile = make_profile(sample(MEMCPY, WORK, MAIN, count=1), sample(MEMCPY, work_again, MAIN, count=1))
    # WHEN built and decoded
    msg = parse_pprof(build_pprof(profile))
    # THEN three locations, four functions, two mappings, and no string twice
    assert [loc.id for loc in msg.location] == [1, 2, 3]
    assert [f.id for f in msg.function] == [1, 2, 3, 4]
    assert [m.id for m in msg.mapping] == [1, 2]
    assert msg.string_table[0] == ""
    assert len(set(msg.string_table)) == len(msg.string_table)
    assert list(msg.sample[0].location_id) == list(msg.sample[1].location_id) == [1, 2, 3]
    # AND the inlined location lists its lines innermost first
    names = {f.id: msg.string_table[f.name] for f in msg.function}
    assert [(names[line.function_id], line.line) for line in msg.location[1].line] == [("hash_inl", 20), ("work", 21)]


def test_equal_addresses_in_different_places_stay_apart() -> None:
    # GIVEN one address in two modules, and one address without module naming two JIT functions
    other = Module(path="/usr/lib/libz.so", build_id=b"", start=LIBC.start, end=LIBC.end, file_offset=0)
    jit_a = sym(0x1000, None, "jit_a", kind=FrameKind.JIT)
    jit_b = sym(0x1000, None, "jit_b", kind=FrameKind.JIT)
    profile = make_profile(sample(MEMCPY, count=1), sample(sym(MEMCPY.addr, other, "inflate"), count=1),
                           sample(jit_a, count=1), sample(jit_b, count=1))
    # WHEN built and decoded
    msg = parse_pprof(build_pprof(profile))
    # THEN each is a location of its own; the JIT ones have no mapping
    assert len(msg.location) == 4
    assert [loc.mapping_id for loc in msg.location] == [1, 2, 0, 0]


def test_output_is_gzip_and_parse_reads_both_forms() -> None:
    data = build_pprof(two_stack_profile())
    assert data[:2] == b"\x1f\x8b"
    assert parse_pprof(gzip.decompress(data)) == parse_pprof(data)


def test_an_empty_profile_is_still_valid(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN an interval without samples WHEN built THEN pprof reads it without complaint
    path = write(tmp_path, build_pprof(make_profile()))
    assert "Samples:\nsamples/count cpu/nanoseconds[dflt]\n" in run_pprof(pprof_tool, "-raw", path)


@pytest.mark.parametrize("symbolize", ["-symbolize=none", "-symbolize=local"])
def test_default_symbolization_leaves_named_mappings_alone(tmp_path: Path, pprof_tool: Path, symbolize: str) -> None:
    # GIVEN only named frames (mappings with functions) of binaries that do not exist here
    path = write(tmp_path, build_pprof(two_stack_profile()))
    # WHEN pprof reads it with or without local symbolization THEN it says nothing on stderr
    assert "memcpy" in run_pprof(pprof_tool, "-top", symbolize, path)


def test_twenty_thousand_deep_samples_build_and_pprof_counts_them(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN 20 000 distinct stacks of 30 frames (the build's speed: tests/benchmarks/delivery.py)
    profile = large_profile(20_000, 30)
    # WHEN built
    data = build_pprof(profile)
    # THEN pprof reads it, its total equal to the sum of the counts put in (-tags: -top takes seconds)
    tags = run_pprof(pprof_tool, "-tags", "-tagshow=pid", "-sample_index=samples", write(tmp_path, data))
    assert tags.startswith(f" pid: Total {sum(s.count for s in profile.samples)}.0\n")


# The builder writes protobuf's wire format by hand; tests/pprof_reference.py fills the same tables
# with protobuf's message classes. Equal bytes mean every field, id and string index agrees.

def edge_profile():  # type: ignore[no-untyped-def]
    """Frames and values at the encoder's edges: no address, no module, an empty name, a mangled
    name, a negative line, 64-bit addresses, a sample without frames, a zero count, ids past the
    one- and two-byte varints (5000 locations)."""
    high = Module(path="/opt/high.so", build_id=b"\xff" * 20, start=2**64 - 2**20, end=2**64 - 1, file_offset=2**40)
    odd = [
        sym(0, APP, "at_zero"),
        sym(high.start + 8, high, "high", file="/src/h.c", line=-3),
        Symbolized(APP.start + 0x50, FrameKind.NATIVE, APP, (Frame("", system_name="_Z3fooi"),), False),
        Symbolized(APP.start + 0x60, FrameKind.NATIVE, APP, (Frame("foo(int)", system_name="_Z3fooi", file="f.cc",
                                                                     line=2**40),), True),
        sym(0x2000, None, "jit_x", kind=FrameKind.JIT),
        SYSCALL,
    ]
    many = [sym(LIBC.start + 4 * i, LIBC, f"f{i % 3000}", file=f"/src/{i % 7}.c", line=i) for i in range(5000)]
    samples = [sample(*odd, count=1), sample(count=2), sample(MAIN, count=0, comm="", pid=-1)]
    samples += [sample(*many[i:i + 30], MAIN, count=i + 1, pid=i % 3) for i in range(0, 5000, 25)]
    return make_profile(*samples, frequency_hz=19, counters={"samples_taken": 2**33, "lost": 0})


@pytest.mark.parametrize("profile", [two_stack_profile(), edge_profile(), large_profile(2000, 30), make_profile()],
                         ids=["two_stacks", "edges", "large", "empty"])
def test_bytes_equal_protobufs_serialization_of_the_same_tables(profile) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a profile WHEN built twice (the second time from the parts cached by the first)
    first, second = build_pprof_raw(profile), build_pprof_raw(profile)
    # THEN both are protobuf's own serialization of the reference message, byte for byte
    expected = reference_message(profile).SerializeToString()
    assert first == expected
    assert second == expected
    # AND protobuf decodes them to that message
    assert parse_pprof(first) == reference_message(profile)


def test_varints_match_protobufs_for_every_width() -> None:
    # GIVEN values at each varint width, the table's edge (4096), uint64's top and negative int64s
    values = [1, 127, 128, 4095, 4096, 16383, 16384, 2**35, 2**63 - 1, 2**64 - 1]
    for value in values:
        # WHEN written as a Location's address (uint64, field 3) THEN protobuf writes the same bytes
        assert pprof_wire.V3 + pprof_wire.varint(value) == pb.Location(address=value).SerializeToString()
    for value in [-1, -128, -(2**63)]:  # int64 Line.line (field 2): two's complement, ten bytes
        assert pprof_wire.V2 + pprof_wire.varint(value) == pb.Line(line=value).SerializeToString()


def test_symbols_made_anew_for_every_build_are_encoded_as_themselves() -> None:
    # GIVEN for each build new Symbolized objects at the same addresses under other names, the
    # last build's dropped first (CPython gives the ids of freed objects to new ones)
    for build in range(20):
        profile = make_profile(*(sample(sym(APP.start + 16 * i, APP, f"f{build}_{i}"), MAIN, count=1)
                                 for i in range(30)))
        # WHEN built THEN each symbol is encoded as itself, never as a cached one that had its id
        assert build_pprof_raw(profile) == reference_message(profile).SerializeToString()
        del profile


def _symbols(n: int, base: int) -> list[Symbolized]:
    return [sym(APP.start + base + 16 * i, APP, f"f{base}_{i}") for i in range(n)]


def _one_sample_each(symbols: list[Symbolized]):  # type: ignore[no-untyped-def]
    return make_profile(*(sample(s, count=1) for s in symbols))


def test_symbols_not_looked_up_for_two_windows_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a cache of generations of 100 symbols and windows of 100 lookups, which has seen the
    # 90 symbols of a first profile
    cache = pprof._SymbolCache(max_symbols=100, window=100)
    monkeypatch.setattr(pprof, "_CACHE", cache)
    first = _one_sample_each(_symbols(90, 0))
    built, outputs = [first], [build_pprof_raw(first)]
    # WHEN 90 other symbols are built four times (a window ends before the builds that find it
    # has had 100 lookups: before the second and the fourth)
    other = _one_sample_each(_symbols(90, 0x10000))
    built += [other] * 4
    outputs += [build_pprof_raw(other) for _ in range(4)]
    # THEN the cache holds the other symbols, and none of the first (their objects are not pinned)
    first_ids = {id(s) for smp in first.samples for s in smp.stack}
    assert not first_ids & (set(cache.parts) | set(cache.previous))
    assert set(cache.parts) == {id(s) for smp in other.samples for s in smp.stack}
    # AND every build's bytes are the reference's
    assert outputs == [reference_message(p).SerializeToString() for p in built]


def test_more_symbols_than_fit_are_built_all_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a cache of generations of 100 symbols and windows of 100 lookups, and a profile of 150
    cache = pprof._SymbolCache(max_symbols=100, window=100)
    monkeypatch.setattr(pprof, "_CACHE", cache)
    profile = _one_sample_each(_symbols(150, 0))
    # WHEN built five times THEN each generation holds 100 of them at most, and the bytes are the reference's
    for _ in range(5):
        assert build_pprof_raw(profile) == reference_message(profile).SerializeToString()
        assert len(cache.parts) <= 100 and len(cache.previous) <= 100
    assert len(cache.parts) == 100


def test_shedding_lets_every_symbol_go_and_builds_stay_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a cache that has built a profile of 50 symbols
    cache = pprof._SymbolCache(max_symbols=100, window=100)
    monkeypatch.setattr(pprof, "_CACHE", cache)
    profile = _one_sample_each(_symbols(50, 0))
    build_pprof_raw(profile)
    assert len(cache.parts) == 50
    # WHEN the governor sheds caches THEN no symbol, module or string is held
    pprof.shed_cache()
    assert (cache.parts, cache.previous, cache.module_keys, cache.string_fields) == ({}, {}, {}, {})
    # AND the next build is the reference's bytes all the same
    assert build_pprof_raw(profile) == reference_message(profile).SerializeToString()
