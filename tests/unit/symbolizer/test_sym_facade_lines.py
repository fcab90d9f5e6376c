"""The Symbolizer facade gives DWARF file:line on a running process, and keeps it on disk.

GIVEN the PIE fixture running (it prints its functions' runtime addresses), WHEN a stack
through them is symbolized, THEN each frame's file and line are addr2line's for the same ELF
address (runtime address - load bias, from the printed address and nm), and the answers are
written to the cache directory at the end of the interval.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sym_build import Binaries
from sym_helpers import nm_address, read_maps, readelf_build_id, running
from test_sym_diskcache import resident_kb
from test_sym_symbolizer import NOWHERE, OWN_FUNCTIONS, user_stack

from symbolizer import Mapping, Symbolizer
from symbolizer.libdw import DwarfFile


def _addr2line(path: Path, elf_vaddrs: list[int]) -> list[tuple[str, int]]:
    out = subprocess.run(["addr2line", "-e", str(path)], input="".join(f"{a:x}\n" for a in elf_vaddrs),
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        file, _, number = line.rpartition(":")
        rows.append((file, int(number.split(" ")[0])))
    return rows


@dataclass(frozen=True)
class Pinned:
    pid: int
    maps: list[Mapping]
    stack: list[int]  # runtime addresses through OWN_FUNCTIONS, leaf first
    bias: int  # runtime address - ELF address


@contextmanager
def pinned(symbolizer: Symbolizer, binary: Path) -> Iterator[Pinned]:
    """The fixture program running, pinned in ``symbolizer``."""
    with running(binary) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        yield Pinned(child.pid, maps, user_stack(child.printed, OWN_FUNCTIONS),
                     child.printed["hf_work"] - nm_address(binary, "hf_work"))


def test_frames_carry_addr2lines_file_and_line_and_are_cached(binaries: Binaries, tmp_path: Path) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(tmp_path))
    with pinned(symbolizer, binaries.pie) as p:
        stack, bias = p.stack, p.bias
        result = symbolizer.symbolize_user(p.pid, p.maps, stack)
    symbolizer.forget_unused()  # writes DWARF answers to the cache
    # lookups use the byte before a return address, as the symbolizer does
    elf_vaddrs = [addr - bias - (1 if index else 0) for index, addr in enumerate(stack)]
    expected = _addr2line(binaries.pie, elf_vaddrs)
    assert [(s.frames[0].file, s.frames[0].line) for s in result] == expected
    assert all(s.frames[0].file.endswith(".c") and s.frames[0].line > 0 for s in result)
    assert symbolizer.stats.disk_cache.get("dwarf_writes", 0) >= 1


def record_dwarf_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the files libdw is handed from now on, in order."""
    opened: list[str] = []
    real_begin = DwarfFile.__init__

    def recording_begin(self: DwarfFile, lib: ctypes.CDLL, fd: int) -> None:
        opened.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_begin(self, lib, fd)

    monkeypatch.setattr(DwarfFile, "__init__", recording_begin)
    return opened


def test_dwarf_is_closed_between_intervals_and_opened_again_after_the_process_exits(
    binaries: Binaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the fixture's first frame symbolized (DWARF opened), then an interval ended
    opened = record_dwarf_opens(monkeypatch)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(tmp_path))
    with pinned(symbolizer, binaries.pie) as p:
        pid, maps, stack, bias = p.pid, p.maps, p.stack, p.bias
        first = symbolizer.symbolize_user(pid, maps, stack[:1])
    assert len(opened) == 1
    symbolizer.forget_unused()
    # WHEN, the process gone, the same address and then new ones are symbolized
    again = symbolizer.symbolize_user(pid, maps, stack[:1])
    assert len(opened) == 1  # a known address needs no DWARF
    rest = symbolizer.symbolize_user(pid, maps, stack)
    # THEN the DWARF was opened once more (through the fd kept for it), and every frame carries
    # addr2line's file and line
    assert len(opened) == 2
    elf_vaddrs = [addr - bias - (1 if index else 0) for index, addr in enumerate(stack)]
    assert [(s.frames[0].file, s.frames[0].line) for s in first + rest[1:]] == _addr2line(binaries.pie, elf_vaddrs)
    assert again[0].frames == first[0].frames


def fds_of(path: Path) -> set[int]:
    """This process's fds open on ``path``."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                out.add(int(fd))
        except OSError:
            continue
    return out


def test_close_leaves_no_fd_of_a_binary_open(binaries: Binaries, tmp_path: Path) -> None:
    # GIVEN a Symbolizer that opened the fixture's DWARF (and keeps an fd to open it again)
    before = fds_of(binaries.pie)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(tmp_path))
    with pinned(symbolizer, binaries.pie) as p:
        symbolizer.symbolize_user(p.pid, p.maps, p.stack)
    assert fds_of(binaries.pie) - before
    # WHEN it is closed (the resource governor replacing it) THEN none of its fds is left open
    symbolizer.close()
    assert fds_of(binaries.pie) <= before


def test_after_a_drain_its_pages_are_released_and_dwarf_it_did_not_need_is_closed(
    binaries: Binaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = record_dwarf_opens(monkeypatch)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(tmp_path))
    with pinned(symbolizer, binaries.pie) as p:
        # GIVEN a drain that needed the fixture's DWARF and its mapped symbol table
        first = symbolizer.symbolize_user(p.pid, p.maps, p.stack[:1])
        table_file = tmp_path / "symtab" / f"{readelf_build_id(binaries.pie).hex()}.sym"
        assert resident_kb(table_file) > 0
        # WHEN the drain ends THEN the table's pages are released, the DWARF stays open
        symbolizer.release_when_idle()
        assert resident_kb(table_file) == 0
        assert len(opened) == 1 and "dwarf_writes" not in symbolizer.stats.disk_cache
        # WHEN the next drain names nothing new THEN the DWARF's answers are written and it is
        # closed: a new address opens it again
        symbolizer.symbolize_user(p.pid, p.maps, p.stack[:1])
        symbolizer.release_when_idle()
        assert symbolizer.stats.disk_cache.get("dwarf_writes", 0) >= 1
        rest = symbolizer.symbolize_user(p.pid, p.maps, p.stack)
        assert len(opened) == 2
        assert rest[0].frames == first[0].frames and all(s.frames[0].line > 0 for s in rest)
