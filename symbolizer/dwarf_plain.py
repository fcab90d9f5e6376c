"""Symbolizer stage: an uncompressed copy of a file's DWARF, kept in the disk cache.

In: an fd of an ELF file whose DWARF sections are compressed (SHF_COMPRESSED, zlib), its
``ElfInfo``, and a ``CacheDir``. Out: a read-only fd of ``<build-id hex>.plain`` there (a file
without a build-id, such as a Go binary, is named by its identity: device, inode, size and
mtime) - an ELF file holding those sections decompressed and nothing else, written once and
reused while its sections still have the sizes the original's headers promise - or None:
nothing compressed, another compression (zstd, ``.zdebug_``), or the copy could not be
written. Sizes were checked by ``symbolizer.source.check_dwarf_sections`` before; the
decompressed bytes must match them exactly.

Why: libdw decompresses compressed sections into the heap at every ``dwarf_begin`` (~10 MB
and ~45 ms of CPU for the libc debug file of Debian's libc6-dbg), and the symbolizer opens
DWARF again each interval a new address needs it (``symbolizer.source.DwarfHandle``). From an
uncompressed file libdw maps the sections instead: a few ms, and only pages it reads are
resident, until the handle is released.
"""

from __future__ import annotations

import os
import struct
import zlib

from symbolizer.cache import key_name, table_key
from symbolizer.diskcache import CacheDir, CacheMiss, write_all
from symbolizer.elf import MAX_DWARF_SECTIONS, DwarfSection, ElfInfo, read_elf_info, read_range
from symbolizer.elf_headers import (
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ET_DYN,
    FILE_HEADER,
    SECTION_HEADER,
    SHT_PROGBITS,
    SHT_STRTAB,
)
from symbolizer.errors import SymbolizerError

ELFCOMPRESS_ZLIB = 1
CHUNK = 1 << 20
MAX_FILE_SIZE = 4 << 30
SUFFIX = ".plain"


def plain_dwarf(fd: int, info: ElfInfo, cache: CacheDir) -> int | None:
    """An fd of the uncompressed copy of the DWARF in ``fd`` (see the module docstring), or None."""
    sections = info.dwarf_sections
    if not any(s.compressed for s in sections) or len(sections) >= MAX_DWARF_SECTIONS:
        return None
    plan = _plan(fd, info)
    if plan is None:
        return None
    name = key_name(table_key(info.build_id, info.identity)) + SUFFIX

    def fill(out: int) -> int:
        try:
            return _write(fd, info, plan, out)
        except (SymbolizerError, zlib.error) as err:
            raise ValueError(str(err)) from err

    for attempt in range(2):
        existing = _reuse(cache, name, plan)
        if existing is not None:
            cache.count("plain_hits" if attempt == 0 else "plain_writes")
            return existing
        if attempt == 0 and not cache.write_from(name, fill):
            return None
    return None


def _plan(fd: int, info: ElfInfo) -> list[tuple[str, int]] | None:
    """(name, uncompressed size) of each DWARF section, or None when one cannot be copied here."""
    chdr = struct.Struct(("<" if info.little_endian else ">") + ("IIQ" if info.is_64 else "II"))
    plan = []
    for section in info.dwarf_sections:
        if section.name.startswith(".zdebug_"):
            return None
        size = section.size
        if section.compressed:
            try:
                kind, *rest = chdr.unpack(read_range(fd, section.offset, chdr.size, info.file_size))
            except SymbolizerError:
                return None
            if kind != ELFCOMPRESS_ZLIB:
                return None
            size = rest[-1]
        plan.append((section.name, size))
    return plan


def _reuse(cache: CacheDir, name: str, plan: list[tuple[str, int]]) -> int | None:
    try:
        fd = cache.open(name, MAX_FILE_SIZE)
    except CacheMiss:
        return None
    try:
        copy = read_elf_info(fd)
    except SymbolizerError:
        copy = None
    if copy is None or [(s.name, s.size) for s in copy.dwarf_sections if not s.compressed] != plan:
        os.close(fd)
        cache.remove(name)
        return None
    return fd


def _write(fd: int, info: ElfInfo, plan: list[tuple[str, int]], out: int) -> int:
    """Write the copy to ``out``: file header, the sections, their names, section headers."""
    bits, order = 64 if info.is_64 else 32, "<" if info.little_endian else ">"
    header = struct.Struct(order + FILE_HEADER[bits])
    ident = b"\x7fELF" + bytes([ELFCLASS64 if info.is_64 else ELFCLASS32,
                                ELFDATA2LSB if info.little_endian else ELFDATA2MSB, 1]) + bytes(9)
    at = write_all(out, bytes(16 + header.size))  # filled in last
    names = bytearray(b"\0")
    rows = []  # (name offset, type, file offset, size)
    for section, (name, size) in zip(info.dwarf_sections, plan, strict=True):
        at += write_all(out, bytes(-at % 8))
        copied = _copy(fd, info, section, size, out)
        rows.append((len(names), SHT_PROGBITS, at, copied))
        names += name.encode() + b"\0"
        at += copied
    rows.append((len(names), SHT_STRTAB, at, len(names) + len(b".shstrtab\0")))
    names += b".shstrtab\0"
    at += write_all(out, names)
    at += write_all(out, bytes(-at % 8))
    shdr = struct.Struct(order + SECTION_HEADER[bits])
    table = bytes(shdr.size) + b"".join(shdr.pack(n, t, 0, 0, offset, size, 0, 0, 1, 0) for n, t, offset, size in rows)
    shoff = at
    at += write_all(out, table)
    os.pwrite(out, ident + header.pack(ET_DYN, info.machine, 1, 0, 0, shoff, 0, 16 + header.size, 0, 0,
                                       shdr.size, len(rows) + 1, len(rows)), 0)
    return at


def _copy(fd: int, info: ElfInfo, section: DwarfSection, expected: int, out: int) -> int:
    """Copy one section's bytes, decompressed; the size written (``expected`` or ``ValueError``)."""
    end = section.offset + section.size
    written = 0
    inflater = zlib.decompressobj() if section.compressed else None
    at = section.offset + ((24 if info.is_64 else 12) if section.compressed else 0)  # past the Elf_Chdr
    while at < end:
        chunk = read_range(fd, at, min(CHUNK, end - at), info.file_size)
        at += len(chunk)
        while chunk:
            piece = inflater.decompress(chunk, CHUNK) if inflater is not None else chunk
            chunk = inflater.unconsumed_tail if inflater is not None else b""
            written += write_all(out, piece)
            if written > expected:
                raise ValueError("a section decompresses past its declared size")
    if inflater is not None:
        written += write_all(out, inflater.flush())
        if not inflater.eof:
            raise ValueError("a compressed section ends early")
    if written != expected:
        raise ValueError("a section's size differs from its header's")
    return written
