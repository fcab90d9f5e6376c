"""Symbolizer stage: function names of a Go binary from ``.gopclntab`` (when .symtab is stripped).

In: the fd and ``ElfInfo`` of a Go binary with a .gopclntab section. Out: a ``SymbolTable``
of its functions (each ends where the next begins; the last at the table's end of text), or
None when the section is not a pclntab this module reads. The Go runtime keeps the table for
its own tracebacks, so ``go build -ldflags=-s`` and ``strip`` leave it in place.

Layouts read (Go's runtime/symtab.go; header words are pointer-sized):
- Go 1.18-1.19 (magic 0xfffffff0) and 1.20+ (0xfffffff1): magic u32, 2 pad bytes, minLC u8,
  ptrSize u8, nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
  pclnOffset; at pclnOffset nfunc+1 pairs (entryOff u32, funcOff u32) relative to textStart
  and to pclnOffset; a _func starts with entryOff u32, nameOff i32 (into the funcname table).
- Go 1.16-1.17 (0xfffffffa): the same header without textStart; pairs are (entry, funcOff)
  pointer-sized, and a _func starts with entry (pointer-sized), nameOff i32.
Every offset is checked against the section; a table with more than ``MAX_FUNCS`` entries is
refused.
"""

from __future__ import annotations

import struct

from symbolizer.elf import ElfInfo, read_range
from symbolizer.symtab import SymbolTable, table_of

MAGIC_116 = 0xFFFFFFFA
MAGIC_118 = 0xFFFFFFF0
MAGIC_120 = 0xFFFFFFF1
MAX_FUNCS = 4 << 20
MAX_PCLNTAB_SIZE = 512 << 20
MAX_NAME = 4096


def go_symbol_table(fd: int, info: ElfInfo) -> SymbolTable | None:
    """The functions of the Go binary open as ``fd``; None when it has no readable pclntab."""
    section = info.gopclntab
    if section is None or section.size < 16:
        return None
    data = read_range(fd, section.offset, section.size, info.file_size, MAX_PCLNTAB_SIZE)
    try:
        return parse_pclntab(data, info.little_endian)
    except (struct.error, ValueError, IndexError):
        return None


def parse_pclntab(data: bytes, little_endian: bool) -> SymbolTable | None:
    order = "<" if little_endian else ">"
    magic = struct.unpack_from(order + "I", data)[0]
    if magic not in (MAGIC_116, MAGIC_118, MAGIC_120) or data[4] or data[5]:
        return None
    ptr = data[7]
    if ptr not in (4, 8):
        return None
    word = order + ("Q" if ptr == 8 else "I")
    modern = magic != MAGIC_116
    fields = 10 if modern else 9
    header = [struct.unpack_from(word, data, 8 + i * ptr)[0] for i in range(fields)]
    nfunc = header[0]
    if modern:
        text_start, funcname_off, pcln_off = header[2], header[3], header[7]
    else:
        text_start, funcname_off, pcln_off = 0, header[2], header[6]
    if not 0 < nfunc <= MAX_FUNCS or pcln_off >= len(data) or funcname_off >= len(data):
        return None
    pair = struct.Struct(order + ("II" if modern else ("QQ" if ptr == 8 else "II")))
    if pcln_off + (nfunc + 1) * pair.size > len(data):
        return None
    name_at = struct.Struct(order + ("Ii" if modern else ("Qi" if ptr == 8 else "Ii")))
    entries: list[tuple[int, bytes]] = []
    for index in range(nfunc + 1):
        entry, func_off = pair.unpack_from(data, pcln_off + index * pair.size)
        if index == nfunc:
            entries.append((text_start + entry, b""))
            break
        at = pcln_off + func_off
        if at + name_at.size > len(data):
            return None
        name_off = name_at.unpack_from(data, at)[1]
        start = funcname_off + name_off
        if not 0 <= name_off and start < len(data):
            return None
        end = data.find(b"\0", start, start + MAX_NAME)
        entries.append((text_start + entry, data[start:end if end >= 0 else start]))
    return _table(entries)


def _table(entries: list[tuple[int, bytes]]) -> SymbolTable | None:
    functions = sorted(entries[:-1])
    text_end = entries[-1][0]
    ranges = [(start, functions[index + 1][0] if index + 1 < len(functions) else text_end, name)
              for index, (start, name) in enumerate(functions)]
    table = table_of((start, end, name) for start, end, name in ranges if name and end > start)
    return table if len(table) else None
