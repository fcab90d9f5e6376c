"""symbolizer.kallsyms and Symbolizer.symbolize_kernel: canned kallsyms files and the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from symbolizer import FrameKind, Symbolizer, kallsyms_parse
from symbolizer.kallsyms import KallsymsTable, load_kallsyms, parse_kallsyms

# Unsorted on purpose, with data symbols, an absolute symbol, module and BPF symbols, and junk.
CANNED = """\
ffffffff81000000 T _stext
ffffffff81001000 T hf_kernel_alpha
ffffffff81002000 t hf_kernel_beta
ffffffff81003000 D hf_kernel_data
ffffffff81004000 T hf_kernel_gamma
0000000000000000 A fixed_percpu_data
ffffffffc0a00000 t hf_mod_init\t[hfmod]
ffffffffc0a00100 T hf_mod_work\t[hfmod]
ffffffffc0a00200 d hf_mod_table\t[hfmod]
ffffffff81000800 W hf_kernel_weak
this line is junk
ffffffffc0b00000 t bpf_prog_6deef7357e7b4530_hf_prog\t[bpf]
"""

RESTRICTED = """\
0000000000000000 T _stext
0000000000000000 T schedule
0000000000000000 t hf_mod_work\t[hfmod]
"""


@pytest.fixture
def canned(tmp_path: Path) -> Path:
    path = tmp_path / "kallsyms"
    path.write_text(CANNED)
    return path


def test_canned_text_symbols_and_boundaries(canned: Path) -> None:
    # GIVEN a canned kallsyms (expected values read off the text above)
    table = load_kallsyms(str(canned))
    # WHEN / THEN addresses inside text symbols resolve, data symbols end the text before them
    assert not table.restricted

    def name_at(addr: int) -> str | None:
        found = table.lookup(addr)
        return None if found is None else found[0]

    assert name_at(0xFFFFFFFF81000000) == "_stext"
    assert name_at(0xFFFFFFFF810007FF) == "_stext"
    assert name_at(0xFFFFFFFF81000800) == "hf_kernel_weak"  # W, listed out of order
    assert name_at(0xFFFFFFFF81001FFF) == "hf_kernel_alpha"
    assert name_at(0xFFFFFFFF81002000) == "hf_kernel_beta"  # t (local)
    assert name_at(0xFFFFFFFF81003010) is None  # in hf_kernel_data
    assert name_at(0xFFFFFFFF81004010) == "hf_kernel_gamma"
    assert name_at(0xFFFFFFFF80FFFFFF) is None  # below the first symbol
    assert len(table) == 10  # 12 lines: the absolute symbol and the junk line are dropped


def test_canned_module_symbols_carry_their_module(canned: Path) -> None:
    table = load_kallsyms(str(canned))
    found = table.lookup(0xFFFFFFFFC0A00150)
    assert found is not None
    name, module = found
    assert (name, module.name, module.path) == ("hf_mod_work", "hfmod", "[hfmod]")
    assert (module.start, module.end) == (0xFFFFFFFFC0A00000, 0xFFFFFFFFC0A00101)
    assert table.lookup(0xFFFFFFFFC0A00210) is None  # in hf_mod_table (data)
    bpf = table.lookup(0xFFFFFFFFC0B00010)
    assert bpf is not None and bpf[0] == "bpf_prog_6deef7357e7b4530_hf_prog" and bpf[1].path == "[bpf]"
    core = table.lookup(0xFFFFFFFF81001000)
    assert core is not None and core[1].path == "[kernel.kallsyms]"


def test_far_past_the_last_symbol_is_unnamed(canned: Path) -> None:
    table = load_kallsyms(str(canned))
    assert table.lookup(0xFFFFFFFFC0B00000 + (1 << 22)) is None


def test_symbolize_kernel_applies_return_address_rule_and_modules(canned: Path) -> None:
    # GIVEN a Symbolizer on the canned kallsyms; a stack whose leaf is the first byte of
    # hf_kernel_beta and whose caller's return address is also the first byte of
    # hf_kernel_beta (the call was the last instruction of hf_kernel_alpha)
    symbolizer = Symbolizer(kallsyms_path=str(canned), kernel_notes_path="/nonexistent")
    stack = [0xFFFFFFFF81002000, 0xFFFFFFFF81002000, 0xFFFFFFFFC0A00105]
    # WHEN it is symbolized
    result = symbolizer.symbolize_kernel(stack)
    # THEN the leaf is hf_kernel_beta, the return address is looked up at -1 (hf_kernel_alpha),
    # the module frame keeps its module, and addresses are returned as sampled
    assert [s.frames[0].function for s in result] == ["hf_kernel_beta", "hf_kernel_alpha", "hf_mod_work"]
    assert [s.addr for s in result] == stack
    assert all(s.kind is FrameKind.KERNEL and s.named for s in result)
    assert [s.module.path if s.module else "" for s in result] == ["[kernel.kallsyms]"] * 2 + ["[hfmod]"]


def test_a_replacement_symbolizer_takes_over_the_kernel_symbols(canned: Path) -> None:
    # GIVEN a Symbolizer that named a kernel stack, then kallsyms gone
    first = Symbolizer(kallsyms_path=str(canned), kernel_notes_path="/nonexistent")
    stack = [0xFFFFFFFF81002000, 0xFFFFFFFFC0A00105]
    names = [s.frames[0].function for s in first.symbolize_kernel(stack)]
    canned.unlink()
    # WHEN a new Symbolizer replaces it (the resource governor shedding caches)
    second = Symbolizer(kallsyms_path=str(canned), kernel_notes_path="/nonexistent", kernel_from=first)
    # THEN it names the stack from the symbols already loaded, without reading kallsyms again
    assert [s.frames[0].function for s in second.symbolize_kernel(stack)] == names == ["hf_kernel_beta",
                                                                                        "hf_mod_work"]
    assert second.stats.binaries_failed == {} and second.stats.cache_misses == 2  # its own memo starts empty


def test_unnamed_kernel_address(canned: Path) -> None:
    symbolizer = Symbolizer(kallsyms_path=str(canned), kernel_notes_path="/nonexistent")
    (result,) = symbolizer.symbolize_kernel([0xFFFFFFFF81003010])
    assert result.frames[0].function == "[kernel] 0xffffffff81003010"
    assert not result.named and result.kind is FrameKind.KERNEL


def test_restricted_kallsyms_gives_unnamed_frames(tmp_path: Path) -> None:
    # GIVEN kallsyms as kptr_restrict shows it: every address 0
    path = tmp_path / "kallsyms"
    path.write_text(RESTRICTED)
    assert load_kallsyms(str(path)).restricted
    # WHEN a kernel stack is symbolized
    result = Symbolizer(kallsyms_path=str(path)).symbolize_kernel([0xFFFFFFFF81002000, 0xFFFFFFFF81001000])
    # THEN every frame is "[kernel] 0x..." and unnamed, nothing raised
    assert [s.frames[0].function for s in result] == ["[kernel] 0xffffffff81002000", "[kernel] 0xffffffff81001000"]
    assert not any(s.named for s in result)


def test_missing_kallsyms_is_counted_not_raised(tmp_path: Path) -> None:
    symbolizer = Symbolizer(kallsyms_path=str(tmp_path / "absent"))
    (result,) = symbolizer.symbolize_kernel([0xFFFFFFFF81002000])
    assert not result.named
    assert symbolizer.stats.binaries_failed == {"gone": 1}


def test_empty_table() -> None:
    table = parse_kallsyms(b"")
    assert len(table) == 0 and table.lookup(0xFFFFFFFF81000000) is None


def _real_text_symbols() -> list[tuple[int, str]]:
    """Text symbols of the running kernel, read with a split() parser written here."""
    out = []
    with open("/proc/kallsyms") as stream:
        for line in stream:
            fields = line.split()
            if len(fields) >= 3 and fields[1] in "tTwW":
                out.append((int(fields[0], 16), fields[2]))
    return out


@pytest.mark.root
def test_real_kallsyms_schedule_round_trips() -> None:
    if os.geteuid() != 0:
        pytest.skip("kallsyms shows zero addresses to unprivileged readers")
    # GIVEN the running kernel's schedule() address, read from /proc/kallsyms by the test
    symbols = sorted(set(_real_text_symbols()))
    addr = next(a for a, name in symbols if name == "schedule")
    previous_addr = max(a for a, _ in symbols if a < addr)
    before = [name for a, name in symbols if a == previous_addr]
    # WHEN a stack with schedule+4 as leaf and schedule's first byte as a return address is
    # symbolized with the real kallsyms
    result = Symbolizer().symbolize_kernel([addr + 4, addr])
    # THEN the leaf is schedule, the return address belongs to the function before it
    assert result[0].frames[0].function == "schedule" and result[0].named
    assert result[0].module is not None and result[0].module.path == "[kernel.kallsyms]"
    assert result[1].frames[0].function in before


# ----- the column-wise parser: fast path, fallback, and the real file ------------------------

# As the kernel prints it: core sorted (with an absolute symbol among them), then modules,
# ftrace and BPF symbols above the core, unsorted among themselves.
WELL_FORMED = """\
ffffffff81000000 T _stext
ffffffff81001000 T hf_kernel_alpha
ffffffff81001000 t hf_kernel_alias
ffffffff81002000 t hf_kernel_beta
ffffffff81003000 D hf_kernel_data
0000000000000000 A hf_absolute
ffffffff81004000 T hf_kernel_gamma
ffffffffc0a00100 T hf_mod_work\t[hfmod]
ffffffffc0a00000 t hf_mod_init\t[hfmod]
ffffffffc0a00200 d hf_mod_table\t[hfmod]
ffffffffc0c00000 t hf_other_fn\t[other_mod]
ffffffffc0b00000 t bpf_prog_6deef7357e7b4530_hf_prog\t[bpf]
"""


def parsed_without_fallback(monkeypatch: pytest.MonkeyPatch, text: str) -> KallsymsTable:
    def refuse(_raw: bytes, _built: object) -> None:
        raise AssertionError("the per-line regex fallback was used")

    monkeypatch.setattr(kallsyms_parse, "_regex_lines", refuse)
    return parse_kallsyms(text.encode())


def names_of(table: KallsymsTable, addrs: list[int]) -> list[str | None]:
    return [None if (found := table.lookup(addr)) is None else found[0] for addr in addrs]


def test_kernel_shaped_text_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN kallsyms text of the kernel's shape WHEN parsed with the regex path disabled
    table = parsed_without_fallback(monkeypatch, WELL_FORMED)
    # THEN names, aliases (the last listed wins, as bisect_right picks), modules and
    # boundaries are as the text above says; the absolute symbol is dropped
    assert len(table) == 11
    assert names_of(table, [0xFFFFFFFF81000010, 0xFFFFFFFF81001010, 0xFFFFFFFF81003010, 0xFFFFFFFF81004000]) == [
        "_stext",
        "hf_kernel_alias",
        None,
        "hf_kernel_gamma",
    ]
    found = table.lookup(0xFFFFFFFFC0A00050)
    assert found is not None and found[0] == "hf_mod_init" and found[1].path == "[hfmod]"
    assert (found[1].start, found[1].end) == (0xFFFFFFFFC0A00000, 0xFFFFFFFFC0A00101)
    assert names_of(table, [0xFFFFFFFFC0A00150, 0xFFFFFFFFC0A00210, 0xFFFFFFFFC0B00004, 0xFFFFFFFFC0C00001]) == [
        "hf_mod_work",
        None,
        "bpf_prog_6deef7357e7b4530_hf_prog",
        "hf_other_fn",
    ]
    core = table.modules[0]
    assert (core.name, core.start, core.end) == ("", 0xFFFFFFFF81000000, 0xFFFFFFFF81004001)


@pytest.mark.parametrize("below_core", [False, True])
def test_unsorted_core_is_sorted_whole_and_agrees_with_the_regex_path(
    monkeypatch: pytest.MonkeyPatch, below_core: bool
) -> None:
    # GIVEN well-formed text whose core lines are out of order (and, in one case, a module
    # symbol below the core kernel's addresses)
    lines = WELL_FORMED.splitlines(keepends=True)
    shuffled = "".join([lines[3], lines[0], lines[6], lines[1], lines[2], lines[4], *lines[7:]])
    if below_core:
        shuffled += "ffffffff80000000 t hf_low_fn\t[lowmod]\n"
    table = parsed_without_fallback(monkeypatch, shuffled)
    monkeypatch.undo()
    slow = parse_kallsyms((shuffled + "junk line\n").encode())  # junk forces the regex path
    # WHEN probed across the core and the modules THEN both paths name the same, and sorted
    probes = [0xFFFFFFFF80000000 + 1, *(0xFFFFFFFF81000000 + step * 0x400 for step in range(24))]
    probes += [0xFFFFFFFFC0A00000 + step for step in range(0, 0x300, 0x40)]
    assert names_of(table, probes) == names_of(slow, probes)
    assert names_of(table, [0xFFFFFFFF81002010, 0xFFFFFFFFC0A00150]) == ["hf_kernel_beta", "hf_mod_work"]
    assert names_of(table, [0xFFFFFFFF80000001]) == (["hf_low_fn"] if below_core else [None])
    assert list(table.columns.addrs) == sorted(table.columns.addrs)
    assert [(m.name, m.start, m.end) for m in table.modules] == [(m.name, m.start, m.end) for m in slow.modules]


def test_thirty_two_bit_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "c1000000 T startup_32\nc1000100 t hf_small\nf8000000 t hf_mod32\t[m32]\n"
    table = parsed_without_fallback(monkeypatch, text)
    assert names_of(table, [0xC1000010, 0xC1000110, 0xF8000001]) == ["startup_32", "hf_small", "hf_mod32"]


@pytest.mark.parametrize(
    "text",
    [
        WELL_FORMED + "ffffffff81005000 T two words\n",  # a line with a token too many
        "ffffffff81000000 T\n" + WELL_FORMED,  # a token too few
        WELL_FORMED + "ffffffff8100600 T odd_width\n",
        WELL_FORMED + "ffffffffc0d00000 t bad_module\tnot-bracketed\n",
    ],
)
def test_text_outside_the_kernels_shape_still_parses_through_the_fallback(text: str) -> None:
    # GIVEN well-formed text with one odd line WHEN parsed THEN the good lines still resolve
    table = parse_kallsyms(text.encode())
    assert names_of(table, [0xFFFFFFFF81002010, 0xFFFFFFFFC0A00150]) == ["hf_kernel_beta", "hf_mod_work"]


@pytest.mark.root
def test_real_kallsyms_every_text_symbol_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("kallsyms shows zero addresses to unprivileged readers")
    # GIVEN the running kernel's kallsyms, read once, and its text symbols by a split() parser
    raw = Path("/proc/kallsyms").read_bytes()
    by_addr: dict[int, set[str]] = {}
    for line in raw.decode().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] in "tTwW":
            by_addr.setdefault(int(fields[0], 16), set()).add(fields[2])
    # WHEN parsed (on the fast path: the kernel's text must never need the fallback)
    table = parsed_without_fallback(monkeypatch, raw.decode())
    # THEN every text symbol's address names that symbol (or an alias at that address)
    wrong = [(hex(addr), names) for addr, names in by_addr.items() if (table.lookup(addr) or ("",))[0] not in names]
    assert wrong == [], wrong[:5]
