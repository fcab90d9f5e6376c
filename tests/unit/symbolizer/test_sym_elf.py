"""symbolizer.elf: headers of real, truncated and hostile ELF files, checked against readelf."""

from __future__ import annotations

import os
import random
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sym_build import CFLAGS, Binaries
from sym_helpers import readelf_build_id, readelf_loads

from symbolizer.elf import ElfInfo, parse_build_id, read_elf_info, read_range
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.symtab import build_symbol_table


@contextmanager
def opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def info_of(path: Path) -> ElfInfo:
    with opened(path) as fd:
        return read_elf_info(fd)


@pytest.mark.parametrize("variant", ["pie", "nopie", "lib", "rdynamic", "stripped"])
def test_build_id_is_the_one_readelf_shows(binaries: Binaries, variant: str) -> None:
    # GIVEN a binary linked with --build-id=sha1 (stripped keeps its notes)
    path: Path = getattr(binaries, variant)
    # WHEN its headers are read
    info = info_of(path)
    # THEN the build-id is readelf -n's
    assert len(info.build_id) == 20
    assert info.build_id == readelf_build_id(path)


def test_binary_without_build_id_has_empty_build_id(binaries: Binaries) -> None:
    # GIVEN a binary linked with --build-id=none (readelf agrees there is none)
    assert readelf_build_id(binaries.no_build_id) == b""
    # WHEN / THEN
    assert info_of(binaries.no_build_id).build_id == b""


@pytest.mark.parametrize("variant", ["pie", "nopie", "lib"])
def test_load_segments_are_readelf_program_headers(binaries: Binaries, variant: str) -> None:
    # GIVEN a binary; WHEN its headers are read
    path: Path = getattr(binaries, variant)
    info = info_of(path)
    # THEN the PT_LOAD segments are exactly readelf -l's, with the E flag as executable
    expected = [(h.file_offset, h.elf_vaddr, h.filesz, "E" in h.flags) for h in readelf_loads(path)]
    assert [(s.file_offset, s.elf_vaddr, s.filesz, s.executable) for s in info.loads] == expected


def test_symbol_sources_symtab_first_and_stripped_keeps_only_dynsym(binaries: Binaries) -> None:
    # GIVEN an unstripped and a stripped binary
    # WHEN their headers are read
    full = info_of(binaries.rdynamic)
    stripped = info_of(binaries.stripped)
    # THEN .symtab comes before .dynsym, and the stripped one has only .dynsym
    assert [s.dynamic for s in full.symbol_sources] == [False, True]
    assert [s.dynamic for s in stripped.symbol_sources] == [True]


def test_elf_class_and_endianness_of_a_native_binary(binaries: Binaries) -> None:
    info = info_of(binaries.pie)
    assert info.is_64 and info.little_endian


def _load_all(path: Path) -> None:
    with opened(path) as fd:
        build_symbol_table(fd, read_elf_info(fd))


@pytest.mark.parametrize("cut", [0, 3, 4, 16, 52, 63, 64, 100, 0x200, 0x1000, -200, -1])
def test_truncated_elf_raises_only_symbolizer_error(binaries: Binaries, tmp_path: Path, cut: int) -> None:
    # GIVEN the first bytes of a real binary (cut from the end when negative)
    data = binaries.pie.read_bytes()
    path = tmp_path / "truncated"
    path.write_bytes(data[:cut])
    # WHEN it is parsed down to the symbol table
    # THEN it either parses (a cut after everything needed) or fails as SymbolizerError, nothing else
    try:
        _load_all(path)
    except SymbolizerError as err:
        assert err.cause in (Cause.BAD_ELF, Cause.TOO_LARGE)
    if 0 <= cut < 64:
        with pytest.raises(SymbolizerError) as raised:
            _load_all(path)
        assert raised.value.cause is Cause.BAD_ELF


@pytest.mark.parametrize(
    "content",
    [b"", b"#!/bin/sh\necho hi\n", os.urandom(4096), b"\x7fELF" + os.urandom(4092), b"\x7fELF\x02\x01\x01" + bytes(57)],
)
def test_garbage_is_bad_elf(tmp_path: Path, content: bytes) -> None:
    # GIVEN a file that is not a valid ELF executable
    path = tmp_path / "garbage"
    path.write_bytes(content)
    # WHEN / THEN reading it is a BAD_ELF SymbolizerError
    with pytest.raises(SymbolizerError) as raised:
        _load_all(path)
    assert raised.value.cause is Cause.BAD_ELF


def test_relocatable_object_is_refused(tmp_path: Path) -> None:
    # GIVEN an object file (ET_REL: nothing is loaded from it)
    source = tmp_path / "o.c"
    source.write_text("int f(void) { return 1; }\n")
    subprocess.run(["gcc", *CFLAGS, "-c", "-o", str(tmp_path / "o.o"), str(source)], check=True)
    # WHEN / THEN
    with pytest.raises(SymbolizerError) as raised:
        _load_all(tmp_path / "o.o")
    assert raised.value.cause is Cause.BAD_ELF


def test_fuzzed_headers_raise_only_symbolizer_error(binaries: Binaries, tmp_path: Path) -> None:
    # GIVEN 400 copies of a real binary with random bytes overwritten in its ELF header,
    # program headers and section headers (seeded: reproducible)
    data = bytearray(binaries.pie.read_bytes())
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    regions = [(0, 64), (64, 64 + 56 * 13), (shoff, len(data))]
    rng = random.Random(20240611)
    path = tmp_path / "fuzzed"
    outcomes: dict[str, int] = {}
    for _ in range(400):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            low, high = rng.choice(regions)
            at = rng.randrange(low, high)
            mutated[at : at + 8] = rng.randbytes(rng.choice([1, 2, 4, 8]))
        path.write_bytes(bytes(mutated))
        # WHEN it is parsed; THEN only SymbolizerError can come out
        try:
            _load_all(path)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except SymbolizerError as err:
            outcomes[err.cause.value] = outcomes.get(err.cause.value, 0) + 1
    assert sum(outcomes.values()) == 400
    assert outcomes.get(Cause.BAD_ELF.value, 0) > 0


def test_read_range_refuses_ranges_outside_the_file_and_above_the_cap(binaries: Binaries) -> None:
    size = binaries.pie.stat().st_size
    with opened(binaries.pie) as fd:
        assert read_range(fd, 0, 4, size) == b"\x7fELF"
        with pytest.raises(SymbolizerError) as outside:
            read_range(fd, size - 2, 4, size)
        with pytest.raises(SymbolizerError) as capped:
            read_range(fd, 0, 1024, size, cap=512)
    assert outside.value.cause is Cause.BAD_ELF
    assert capped.value.cause is Cause.TOO_LARGE


def _note(name: bytes, note_type: int, desc: bytes, align: int, order: str = "<") -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % align)

    return struct.pack(order + "III", len(name), len(desc), note_type) + pad(name) + pad(desc)


@pytest.mark.parametrize("align", [4, 8])
def test_build_id_note_is_found_after_other_notes(align: int) -> None:
    # GIVEN a GNU property note, an ABI tag note with another owner, then the build-id
    build_id = bytes(range(20))
    notes = (
        _note(b"GNU\0", 5, bytes(16), align)
        + _note(b"Xen\0", 3, b"\x01\x02", align)
        + _note(b"GNU\0", 3, build_id, align)
    )
    # WHEN / THEN only the GNU NT_GNU_BUILD_ID note's payload is the build-id
    assert parse_build_id(notes, little_endian=True, align=align) == build_id


def test_build_id_note_big_endian_and_truncated() -> None:
    build_id = b"\xaa" * 8
    notes = _note(b"GNU\0", 3, build_id, 4, ">")
    assert parse_build_id(notes, little_endian=False) == build_id
    assert parse_build_id(notes[:-3], little_endian=False) == b""
    assert parse_build_id(b"\xff" * 7, little_endian=True) == b""


def test_extended_header_numbering_is_followed(binaries: Binaries, tmp_path: Path) -> None:
    # GIVEN the fixture rewritten as a file with more than 0xff00 sections / 0xffff program
    # headers says it: e_shnum 0 and e_phnum 0xffff, the real counts in section 0's sh_size and
    # sh_info (readelf reads such a file the same way as the original)
    data = bytearray(binaries.pie.read_bytes())
    phnum, shnum = struct.unpack_from("<HxxH", data, 0x38)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    struct.pack_into("<H", data, 0x38, 0xFFFF)
    struct.pack_into("<H", data, 0x3C, 0)
    struct.pack_into("<Q", data, shoff + 0x20, shnum)  # section 0's sh_size
    struct.pack_into("<I", data, shoff + 0x2C, phnum)  # section 0's sh_info
    extended = tmp_path / "extended"
    extended.write_bytes(bytes(data))
    assert readelf_loads(extended) == readelf_loads(binaries.pie)
    # THEN its headers read as the original's
    original, rewritten = info_of(binaries.pie), info_of(extended)
    assert (rewritten.loads, rewritten.symbol_sources, rewritten.build_id, rewritten.dwarf_sections) == (
        original.loads, original.symbol_sources, original.build_id, original.dwarf_sections)
