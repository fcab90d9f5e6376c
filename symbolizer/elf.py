"""Symbolizer stage: read what symbolization needs from one ELF file, defensively.

In: an fd of a regular file (see ``symbolizer.files``). Out: an ``ElfInfo`` (build-id,
PT_LOAD segments, where the symbol tables are) and bounded raw reads of its sections.
Every failure - truncated, hostile or non-ELF input, short reads - is raised as
``SymbolizerError`` with a cause; nothing else escapes.

``symbolizer.elf_headers`` reads the headers; section payloads are read here with ``os.pread``
after their offsets and sizes are checked against the file size and the caps below.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from symbolizer.elf_headers import (
    ET_DYN,
    ET_EXEC,
    PT_LOAD,
    PT_NOTE,
    SHT_DYNSYM,
    SHT_NOTE,
    SHT_PROGBITS,
    SHT_STRTAB,
    SHT_SYMTAB,
    Headers,
    read_headers,
)
from symbolizer.errors import Cause, SymbolizerError, cause_of_os_error

MAX_FILE_SIZE = 8 << 30  # larger files are refused without reading
MAX_SECTION_SIZE = 1 << 30  # a symbol or string table larger than this is refused
MAX_SECTIONS = 1 << 16
MAX_SEGMENTS = 1 << 12
MAX_NOTES_SIZE = 1 << 16  # per PT_NOTE segment / SHT_NOTE section
MAX_BUILD_ID_SIZE = 64
MAX_SECTION_NAMES_SIZE = 1 << 20  # the part of .shstrtab read to find .gnu_debuglink / .gnu_debugdata
SHN_XINDEX = 0xFFFF
DEBUGLINK_SECTION = b".gnu_debuglink"
DEBUGDATA_SECTION = b".gnu_debugdata"
GOPCLNTAB_SECTION = b".gopclntab"
SHF_COMPRESSED = 0x800
MAX_DWARF_SECTIONS = 64
NT_GNU_BUILD_ID = 3
PF_X = 1


@dataclass(frozen=True, slots=True)
class LoadSegment:
    """One PT_LOAD program header: file bytes [file_offset, +filesz) appear at elf_vaddr."""

    file_offset: int
    elf_vaddr: int
    filesz: int
    executable: bool


@dataclass(frozen=True, slots=True)
class SymbolSource:
    """Where one symbol table (.symtab or .dynsym) and its string table lie in the file."""

    dynamic: bool  # True for .dynsym
    offset: int
    size: int
    entsize: int
    strtab_offset: int
    strtab_size: int


@dataclass(frozen=True, slots=True)
class SectionRange:
    """Where one section's bytes lie in the file."""

    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class DwarfSection:
    """One DWARF section's place in the file; ``compressed``: SHF_COMPRESSED (an Elf_Chdr first)."""

    name: str
    offset: int
    size: int
    compressed: bool


@dataclass(frozen=True, slots=True)
class ElfInfo:
    """The headers of one ELF file that symbolization uses."""

    is_64: bool
    little_endian: bool
    build_id: bytes  # b"" when the file has no GNU build-id note
    loads: tuple[LoadSegment, ...]
    symbol_sources: tuple[SymbolSource, ...]  # .symtab first, then .dynsym
    file_size: int
    identity: tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)
    machine: int = 0  # e_machine, e.g. 62 (EM_X86_64)
    debuglink: SectionRange | None = None  # .gnu_debuglink: name and CRC32 of a separate debug file
    debugdata: SectionRange | None = None  # .gnu_debugdata: MiniDebugInfo, an xz-compressed ELF
    gopclntab: SectionRange | None = None  # .gopclntab: a Go binary's function table
    dwarf_sections: tuple[DwarfSection, ...] = ()  # .debug_* / .zdebug_* (PROGBITS), checked before libdw

    @property
    def has_symtab(self) -> bool:
        """True when the file has a non-empty .symtab (not only .dynsym)."""
        return any(not source.dynamic for source in self.symbol_sources)


def read_range(fd: int, offset: int, size: int, file_size: int, cap: int = MAX_SECTION_SIZE) -> bytes:
    """Read exactly ``size`` bytes at ``offset``; refuse ranges outside the file or above ``cap``."""
    if offset < 0 or size < 0 or offset + size > file_size:
        raise SymbolizerError(Cause.BAD_ELF, f"range {offset:#x}+{size:#x} outside a {file_size}-byte file")
    if size > cap:
        raise SymbolizerError(Cause.TOO_LARGE, f"section of {size} bytes > cap {cap}")
    try:
        data = os.pread(fd, size, offset)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"read failed: {err.strerror}") from err
    if len(data) != size:
        raise SymbolizerError(Cause.BAD_ELF, f"short read at {offset:#x}: file truncated")
    return data


def parse_build_id(notes: bytes, little_endian: bool, align: int = 4) -> bytes:
    """The GNU build-id in a run of ELF notes (a PT_NOTE segment or /sys/kernel/notes), or b""."""
    header = struct.Struct("<III" if little_endian else ">III")
    pos = 0
    while pos + header.size <= len(notes):
        namesz, descsz, note_type = header.unpack_from(notes, pos)
        name_at = pos + header.size
        desc_at = name_at + _round_up(namesz, align)
        end = desc_at + _round_up(descsz, align)
        if desc_at + descsz > len(notes):
            return b""
        if note_type == NT_GNU_BUILD_ID and notes[name_at : name_at + namesz] == b"GNU\0":
            return bytes(notes[desc_at : desc_at + min(descsz, MAX_BUILD_ID_SIZE)])
        pos = end
    return b""


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def read_elf_info(fd: int) -> ElfInfo:
    """Parse the ELF headers of the regular file open as ``fd``."""
    try:
        st = os.fstat(fd)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"fstat failed: {err.strerror}") from err
    if not stat.S_ISREG(st.st_mode):
        raise SymbolizerError(Cause.NOT_REGULAR, "not a regular file")
    if st.st_size > MAX_FILE_SIZE:
        raise SymbolizerError(Cause.TOO_LARGE, f"{st.st_size} bytes > cap {MAX_FILE_SIZE}")
    if read_range(fd, 0, min(4, st.st_size), st.st_size) != b"\x7fELF":
        raise SymbolizerError(Cause.BAD_ELF, "no ELF magic")
    return _read_info(fd, read_headers(fd, st.st_size, MAX_SEGMENTS, MAX_SECTIONS), st)


def _read_info(fd: int, elf: Headers, st: os.stat_result) -> ElfInfo:
    if elf.e_type not in (ET_EXEC, ET_DYN):
        raise SymbolizerError(Cause.BAD_ELF, f"e_type {elf.e_type} is not loadable")
    little = elf.little_endian
    loads: list[LoadSegment] = []
    build_id = b""
    for ph in elf.programs:
        if ph.p_type == PT_LOAD:
            loads.append(LoadSegment(ph.p_offset, ph.p_vaddr, ph.p_filesz, bool(ph.p_flags & PF_X)))
        elif ph.p_type == PT_NOTE and not build_id:
            size = min(ph.p_filesz, MAX_NOTES_SIZE)
            notes = read_range(fd, ph.p_offset, size, st.st_size)
            build_id = parse_build_id(notes, little, 8 if ph.p_align == 8 else 4)
    sources: list[SymbolSource] = []
    names = _section_names(fd, elf, st.st_size)
    named: dict[bytes, SectionRange] = {}
    dwarf: list[DwarfSection] = []
    for sh in elf.sections:
        if sh.sh_type == SHT_PROGBITS and names:
            name = _name_at(names, sh.sh_name)
            if name in (DEBUGLINK_SECTION, DEBUGDATA_SECTION, GOPCLNTAB_SECTION) and name not in named:
                named[name] = SectionRange(sh.sh_offset, sh.sh_size)
            elif name.startswith((b".debug_", b".zdebug_")) and len(dwarf) < MAX_DWARF_SECTIONS:
                dwarf.append(DwarfSection(name.decode("ascii", "replace"), sh.sh_offset, sh.sh_size,
                                          bool(sh.sh_flags & SHF_COMPRESSED)))
        if sh.sh_type == SHT_NOTE and not build_id:
            notes = read_range(fd, sh.sh_offset, min(sh.sh_size, MAX_NOTES_SIZE), st.st_size)
            build_id = parse_build_id(notes, little, 8 if sh.sh_addralign == 8 else 4)
        elif sh.sh_type in (SHT_SYMTAB, SHT_DYNSYM) and sh.sh_size > 0:
            if not 0 < sh.sh_link < len(elf.sections):
                raise SymbolizerError(Cause.BAD_ELF, f"symbol table links to section {sh.sh_link}")
            strtab = elf.sections[sh.sh_link]
            sources.append(
                SymbolSource(
                    dynamic=sh.sh_type == SHT_DYNSYM,
                    offset=sh.sh_offset,
                    size=sh.sh_size,
                    entsize=sh.sh_entsize,
                    strtab_offset=strtab.sh_offset,
                    strtab_size=strtab.sh_size,
                )
            )
    sources.sort(key=lambda source: source.dynamic)
    return ElfInfo(
        is_64=elf.is_64,
        little_endian=little,
        build_id=build_id,
        loads=tuple(loads),
        symbol_sources=tuple(sources),
        file_size=st.st_size,
        identity=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        machine=elf.e_machine,
        debuglink=named.get(DEBUGLINK_SECTION),
        debugdata=named.get(DEBUGDATA_SECTION),
        gopclntab=named.get(GOPCLNTAB_SECTION),
        dwarf_sections=tuple(dwarf),
    )


def _section_names(fd: int, elf: Headers, file_size: int) -> bytes:
    """The head of the section-name string table, or b"" when it is missing or unreadable
    (names are optional: only debug-file lookups use them)."""
    index = elf.e_shstrndx
    if index == SHN_XINDEX and elf.sections:
        index = elf.sections[0].sh_link
    if not 0 < index < len(elf.sections):
        return b""
    sh = elf.sections[index]
    if sh.sh_type != SHT_STRTAB:
        return b""
    try:
        return read_range(fd, sh.sh_offset, min(sh.sh_size, MAX_SECTION_NAMES_SIZE), file_size)
    except SymbolizerError:
        return b""


def _name_at(names: bytes, offset: int) -> bytes:
    end = names.find(b"\0", offset)
    return names[offset:end] if 0 <= offset < len(names) and end >= 0 else b""
