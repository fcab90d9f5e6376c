"""Symbolizer stage: the ELF file header and its program and section header tables, as numbers.

In: an fd of a regular file and its size. Out: ``Headers`` - class, byte order, type, machine,
and per index a ``ProgramHeader`` or ``SectionHeader`` - or ``SymbolizerError(BAD_ELF)`` for
anything that does not fit: an unknown class or byte order, an entry size too small for its
struct, a table or entry outside the file. Header counts follow the extended numbering
(``e_shnum`` 0: the count is section 0's ``sh_size``; ``e_phnum`` 0xffff: section 0's
``sh_info``). Nothing else is interpreted here (``symbolizer.elf`` does), and nothing is read
but the headers (``struct`` over ``os.pread``: the agent does not load an ELF library for this).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

from symbolizer.errors import Cause, SymbolizerError

ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
PN_XNUM = 0xFFFF
ET_EXEC, ET_DYN = 2, 3
PT_LOAD, PT_NOTE = 1, 4
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_DYNSYM = 1, 2, 3, 7, 11
MAX_HEADER_TABLE = 8 << 20  # bytes of one header table read at once (65536 x 64-byte sections is 4 MiB)

# e_type .. e_shstrndx after e_ident: type, machine, version, entry, phoff, shoff, flags, ehsize,
# phentsize, phnum, shentsize, shnum, shstrndx
FILE_HEADER = {32: "HHIIIIIHHHHHH", 64: "HHIQQQIHHHHHH"}
_PROGRAM_HEADER = {32: "IIIIIIII", 64: "IIQQQQQQ"}  # 32-bit keeps p_flags seventh, 64-bit second
SECTION_HEADER = {32: "IIIIIIIIII", 64: "IIQQQQIIQQ"}  # name, type, flags, addr, offset, size, link,
# info, addralign, entsize


class ProgramHeader(NamedTuple):
    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_filesz: int
    p_align: int


class SectionHeader(NamedTuple):
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int


@dataclass(frozen=True, slots=True)
class Headers:
    is_64: bool
    little_endian: bool
    e_type: int
    e_machine: int
    e_shstrndx: int
    programs: tuple[ProgramHeader, ...]
    sections: tuple[SectionHeader, ...]


def _bad(message: str) -> SymbolizerError:
    return SymbolizerError(Cause.BAD_ELF, message)


def _read(fd: int, offset: int, size: int, file_size: int) -> bytes:
    if offset < 0 or offset + size > file_size:
        raise _bad(f"headers at {offset:#x}+{size:#x} outside a {file_size}-byte file")
    if size > MAX_HEADER_TABLE:
        raise _bad(f"a header table of {size} bytes")
    try:
        data = os.pread(fd, size, offset)
    except (OSError, OverflowError) as err:
        raise _bad(f"read failed: {err}") from err
    if len(data) != size:
        raise _bad("short read: file truncated")
    return data


@dataclass(frozen=True, slots=True)
class _File:
    fd: int
    size: int
    order: str  # "<" or ">"
    bits: int  # 32 or 64

    def table(self, offset: int, count: int, entsize: int, formats: dict[int, str]) -> list[tuple[int, ...]]:
        """``count`` entries of ``formats[bits]`` every ``entsize`` bytes from ``offset``."""
        entry = struct.Struct(self.order + formats[self.bits])
        if count == 0:
            return []
        if entsize < entry.size:
            raise _bad(f"entry size {entsize} below {entry.size}")
        data = _read(self.fd, offset, (count - 1) * entsize + entry.size, self.size)
        return [entry.unpack_from(data, index * entsize) for index in range(count)]


def read_headers(fd: int, file_size: int, max_programs: int, max_sections: int) -> Headers:
    """The headers of the ELF file open as ``fd`` (its magic already checked); more than
    ``max_programs`` or ``max_sections`` entries is refused before they are read."""
    ident = _read(fd, 0, 16, file_size)
    bits = {ELFCLASS32: 32, ELFCLASS64: 64}.get(ident[4])
    order = {ELFDATA2LSB: "<", ELFDATA2MSB: ">"}.get(ident[5])
    if bits is None or order is None:
        raise _bad(f"EI_CLASS {ident[4]} / EI_DATA {ident[5]} unknown")
    elf = _File(fd, file_size, order, bits)
    header = struct.Struct(order + FILE_HEADER[bits])
    (e_type, e_machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, shstrndx) = \
        header.unpack_from(_read(fd, 16, header.size, file_size))
    first: tuple[int, ...] | None = None  # section 0, which extended numbering reads counts from
    if shoff and (shnum == 0 or phnum >= PN_XNUM):
        (first,) = elf.table(shoff, 1, shentsize, SECTION_HEADER)
    sections = 0 if shoff == 0 else (first[5] if shnum == 0 and first is not None else shnum)
    programs = (first[7] if first is not None else 0) if phnum >= PN_XNUM else phnum
    if programs > max_programs or sections > max_sections:
        raise _bad(f"implausible number of headers ({programs} program, {sections} section)")
    return Headers(
        is_64=bits == 64,
        little_endian=order == "<",
        e_type=e_type,
        e_machine=e_machine,
        e_shstrndx=shstrndx,
        programs=tuple(_program(raw, bits) for raw in elf.table(phoff, programs, phentsize, _PROGRAM_HEADER)),
        sections=tuple(SectionHeader(n, t, flags, off, size, link, info, align, entsize)
                       for n, t, flags, _addr, off, size, link, info, align, entsize
                       in elf.table(shoff, sections, shentsize, SECTION_HEADER)),
    )


def _program(raw: tuple[int, ...], bits: int) -> ProgramHeader:
    if bits == 64:
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, p_align = raw
    else:
        p_type, p_offset, p_vaddr, _paddr, p_filesz, _memsz, p_flags, p_align = raw
    return ProgramHeader(p_type, p_flags, p_offset, p_vaddr, p_filesz, p_align)
