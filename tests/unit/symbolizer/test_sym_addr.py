"""symbolizer.addr: runtime addr -> file_offset -> elf_vaddr, checked on running processes.

The runtime addresses are printed by the program itself (printf("%p", fn)); the expected
ELF addresses come from nm and the expected file offsets from objdump -F.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sym_build import Binaries
from sym_helpers import mapping_of, nm_address, objdump_file_offset, read_maps, running

from symbolizer.addr import elf_vaddr_of, elf_vaddr_of_addr, file_offset_of
from symbolizer.elf import LoadSegment, read_elf_info
from symbolizer.model import Mapping

FUNCTIONS = ("hf_work", "hf_middle", "hf_static_helper", "hf_next_function")


def loads_of(path: Path) -> tuple[LoadSegment, ...]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_elf_info(fd).loads
    finally:
        os.close(fd)


@pytest.mark.parametrize("variant", ["pie", "nopie"])
def test_printed_function_addresses_map_back_to_nm_values(binaries: Binaries, variant: str) -> None:
    path: Path = getattr(binaries, variant)
    loads = loads_of(path)
    # GIVEN a running PIE / non-PIE program that printed its functions' runtime addresses
    with running(path) as child:
        maps = read_maps(child.pid)
    for name in FUNCTIONS:
        addr = child.printed[name]
        mapping = mapping_of(maps, addr)
        # WHEN its runtime address is converted
        # THEN the file offset is objdump's and the ELF address is nm's
        assert file_offset_of(addr, mapping) == objdump_file_offset(path, name), name
        assert elf_vaddr_of_addr(addr, mapping, loads) == nm_address(path, name), name


def test_shared_library_addresses_map_back_to_nm_values(binaries: Binaries) -> None:
    loads = loads_of(binaries.lib)
    # GIVEN a running program whose library printed a local function's address and its load
    # base (from dladdr, i.e. the dynamic linker's view)
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
    static_work = child.printed["hf_lib_static_work"]
    entry = child.printed["lib_base"] + nm_address(binaries.lib, "hf_lib_entry")
    # WHEN / THEN both convert to nm's values in the library
    for addr, name in ((static_work, "hf_lib_static_work"), (entry, "hf_lib_entry")):
        mapping = mapping_of(maps, addr)
        assert mapping.path == str(binaries.lib)
        assert elf_vaddr_of_addr(addr, mapping, loads) == nm_address(binaries.lib, name), name


def test_segment_with_unaligned_file_offset() -> None:
    # GIVEN a segment whose file bytes at 0x2d10 load at vaddr 0x3d10 (a typical RW segment),
    # mapped by the kernel from the page below it: file offset 0x2000 at runtime 0x7f0000002000
    loads = (
        LoadSegment(file_offset=0, elf_vaddr=0, filesz=0x1000, executable=False),
        LoadSegment(file_offset=0x1000, elf_vaddr=0x1000, filesz=0x800, executable=True),
        LoadSegment(file_offset=0x2D10, elf_vaddr=0x3D10, filesz=0x300, executable=False),
    )
    mapping = Mapping(0x7F0000002000, 0x7F0000003000, "rw-p", 0x2000, 8, 1, 99, "/x")
    # WHEN runtime 0x7f0000002d20 is converted: file offset 0x2d20, 0x10 into the segment
    # THEN it is at vaddr 0x3d20; bytes before the segment's file offset are in no segment
    assert file_offset_of(0x7F0000002D20, mapping) == 0x2D20
    assert elf_vaddr_of_addr(0x7F0000002D20, mapping, loads) == 0x3D20
    assert elf_vaddr_of(0x2800, loads) is None
    assert elf_vaddr_of(0x17FF, loads) == 0x17FF


def test_executable_segment_wins_when_segments_share_file_bytes() -> None:
    # GIVEN two segments that claim the same file bytes (a prelinked or hand-made layout)
    loads = (
        LoadSegment(file_offset=0, elf_vaddr=0x10000, filesz=0x2000, executable=False),
        LoadSegment(file_offset=0x1000, elf_vaddr=0x400000, filesz=0x1000, executable=True),
    )
    # WHEN / THEN code addresses resolve through the executable one
    assert elf_vaddr_of(0x1800, loads) == 0x400800
    assert elf_vaddr_of(0x0800, loads) == 0x10800
