"""Symbolizer stage: a sorted, compact table of an ELF file's function symbols.

In: an fd and its ``ElfInfo`` (which locates .symtab and .dynsym). Out: a ``SymbolTable``
answering ``lookup(elf_vaddr) -> name | None`` by bisection.

Built in one pass over the raw symbol entries (``struct.iter_unpack``, no per-symbol
pyelftools objects). Only defined STT_FUNC / STT_GNU_IFUNC symbols are kept. Storage is three
``array``s (start, end, name offset) plus the string tables joined into one ``bytes``; a name is
decoded only when it is looked up. .symtab and .dynsym are merged: at one address the best
name wins (GLOBAL over WEAK over LOCAL, then fewer leading underscores, then .symtab).
A symbol's size bounds it; a size-0 symbol extends to the next symbol's start.

A separate debug file (see ``symbolizer.debuginfo``) is merged as extra parts: its .symtab
counts as a .symtab of the binary (its section addresses are the binary's ELF vaddrs); its
.dynsym, if any, is ignored (the binary's own is already read).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Sequence

from symbolizer.elf import ElfInfo, SymbolSource, read_range

STT_FUNC = 2
STT_GNU_IFUNC = 10
SHN_UNDEF = 0
_FUNCTION_TYPES = frozenset((STT_FUNC, STT_GNU_IFUNC))
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}  # anything else (LOCAL, GNU_UNIQUE, ...) ranks 2
LAST_SYMBOL_SPAN = 4096  # a size-0 last symbol covers up to the next page boundary
_OVERLAP_PROBES = 4  # how far back a lookup looks for an enclosing (overlapping) symbol


class SymbolTable:
    """Function symbols of one binary, sorted by ELF virtual address."""

    __slots__ = ("_ends", "_name_offsets", "_names", "_starts")

    def __init__(self, starts: array[int], ends: array[int], name_offsets: array[int], names: bytes) -> None:
        self._starts = starts
        self._ends = ends
        self._name_offsets = name_offsets
        self._names = names  # NUL-terminated strings; every offset points into it

    def __len__(self) -> int:
        return len(self._starts)

    def lookup(self, elf_vaddr: int) -> str | None:
        """The function containing ``elf_vaddr``, or None."""
        index = bisect.bisect_right(self._starts, elf_vaddr) - 1
        for probe in range(index, max(index - _OVERLAP_PROBES, -1), -1):
            if elf_vaddr < self._ends[probe]:
                return self._name_at(probe)
        return None

    def nearest(self, elf_vaddr: int) -> str | None:
        """The function starting last at or before ``elf_vaddr``, whatever its size (as addr2line
        names padding after a function); use only when DWARF says the address is code."""
        index = bisect.bisect_right(self._starts, elf_vaddr) - 1
        return self._name_at(index) if index >= 0 else None

    def lookup_start(self, elf_vaddr: int) -> int | None:
        """The start address of the function containing ``elf_vaddr``, or None."""
        index = bisect.bisect_right(self._starts, elf_vaddr) - 1
        for probe in range(index, max(index - _OVERLAP_PROBES, -1), -1):
            if elf_vaddr < self._ends[probe]:
                return self._starts[probe]
        return None

    def _name_at(self, index: int) -> str:
        offset = self._name_offsets[index]
        return self._names[offset : self._names.index(b"\0", offset)].decode("utf-8", "replace")

    def columns(self) -> tuple[array[int], array[int], array[int], bytes]:
        """(starts, ends, name offsets, names blob): what ``symbolizer.table_cache`` stores."""
        return self._starts, self._ends, self._name_offsets, self._names

    @property
    def size_bytes(self) -> int:
        """Approximate memory held by the table."""
        return len(self._names) + sum(a.itemsize * len(a) for a in (self._starts, self._ends, self._name_offsets))


EMPTY_TABLE = SymbolTable(array("Q"), array("Q"), array("Q"), b"\0")

# One candidate: (start, bind rank, source rank, -size, name offset).
_Candidate = tuple[int, int, int, int, int]


def _entry_format(info: ElfInfo) -> tuple[struct.Struct, bool]:
    order = "<" if info.little_endian else ">"
    if info.is_64:
        return struct.Struct(order + "IBBHQQ"), True  # name, info, other, shndx, value, size
    return struct.Struct(order + "IIIBBH"), False  # name, value, size, info, other, shndx


def _collect(fd: int, info: ElfInfo, source: SymbolSource, base: int, out: list[_Candidate]) -> bytes:
    """Append the defined functions of one symbol table to ``out``; return its string table."""
    entry, is_64 = _entry_format(info)
    if source.entsize not in (0, entry.size):
        return b""
    strtab = read_range(fd, source.strtab_offset, source.strtab_size, info.file_size)
    data = read_range(fd, source.offset, source.size, info.file_size)
    usable = len(data) - len(data) % entry.size
    source_rank = 1 if source.dynamic else 0
    limit = len(strtab)
    for fields in entry.iter_unpack(memoryview(data)[:usable]):
        if is_64:
            name, st_info, _, shndx, value, size = fields
        else:
            name, value, size, st_info, _, shndx = fields
        kind = st_info & 0xF
        if kind not in _FUNCTION_TYPES or shndx == SHN_UNDEF or value == 0:
            continue
        if name == 0 or name >= limit:
            continue
        out.append((value, _BIND_RANK.get(st_info >> 4, 2), source_rank, -size, base + name))
    return strtab


def _underscores(names: bytes, offset: int) -> int:
    count = 0
    while names[offset + count] == 0x5F:  # "_"
        count += 1
    return count


def _best_of(run: list[_Candidate], names: bytes) -> _Candidate:
    """Among symbols at one address: best binding, then fewest leading underscores, then .symtab.

    The winner keeps the largest size of the run (an alias may be declared without a size).
    """
    if len(run) == 1:
        return run[0]
    best = min(run, key=lambda c: (c[1], _underscores(names, c[4]), c[2], c[3]))
    return (best[0], best[1], best[2], min(c[3] for c in run), best[4])


def build_symbol_table(fd: int, info: ElfInfo, extra: Sequence[tuple[int, ElfInfo]] = ()) -> SymbolTable:
    """Read .symtab and .dynsym of the file open as ``fd``, and the .symtab of each debug file
    in ``extra`` (fd, info), into one ``SymbolTable``."""
    parts = [(fd, info, info.symbol_sources)]
    parts += [(debug_fd, debug, tuple(s for s in debug.symbol_sources if not s.dynamic)) for debug_fd, debug in extra]
    candidates: list[_Candidate] = []
    blobs: list[bytes] = []
    base = 0
    for part_fd, part_info, sources in parts:
        for source in sources:
            strtab = _collect(part_fd, part_info, source, base, candidates)
            blobs.append(strtab)
            base += len(strtab)
    if not candidates:
        return EMPTY_TABLE
    blobs.append(b"\0")  # every name is NUL-terminated, even one at the end of a truncated table
    names = b"".join(blobs)
    candidates.sort()
    chosen: list[_Candidate] = []
    run: list[_Candidate] = [candidates[0]]
    for candidate in candidates[1:]:
        if candidate[0] == run[0][0]:
            run.append(candidate)
            continue
        chosen.append(_best_of(run, names))
        run = [candidate]
    chosen.append(_best_of(run, names))
    starts = array("Q", [c[0] for c in chosen])
    ends = array("Q", starts)
    for index, candidate in enumerate(chosen):
        size = -candidate[3]
        if size > 0:
            ends[index] = min(candidate[0] + size, (1 << 64) - 1)
        elif index + 1 < len(chosen):
            ends[index] = starts[index + 1]
        else:
            ends[index] = (candidate[0] // LAST_SYMBOL_SPAN + 1) * LAST_SYMBOL_SPAN
    return SymbolTable(starts, ends, array("Q", [c[4] for c in chosen]), names)
