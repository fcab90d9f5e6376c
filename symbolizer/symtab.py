"""Symbolizer stage: a sorted, compact table of an ELF file's function symbols.

In: an fd and its ``ElfInfo`` (which locates .symtab and .dynsym). Out: a ``SymbolTable``
answering ``lookup(elf_vaddr) -> name | None`` by bisection.

Built in one pass over the raw symbol entries (``struct.iter_unpack``, no object per symbol),
the candidates kept in ``array`` columns. Only defined STT_FUNC /
STT_GNU_IFUNC symbols are kept. Storage is three ``array``s (start, end, name offset) plus the
chosen names back to back in one ``bytes`` (not the whole string tables: much of a large
binary's strings name data, imports and aliases); a name is decoded only when it is looked up.
The same columns can be views of a mapped cache file (``symbolizer.table_cache``).
.symtab and .dynsym are merged: at one address the best name wins (GLOBAL over WEAK over
LOCAL, then fewer leading underscores, then .symtab). A symbol's size bounds it; a size-0
symbol extends to the next symbol's start.

A separate debug file (see ``symbolizer.debuginfo``) is merged as extra parts: its .symtab
counts as a .symtab of the binary (its section addresses are the binary's ELF vaddrs); its
.dynsym, if any, is ignored (the binary's own is already read).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeAlias

from symbolizer.elf import ElfInfo, SymbolSource, read_range

STT_FUNC = 2
STT_GNU_IFUNC = 10
SHN_UNDEF = 0
_FUNCTION_TYPES = frozenset((STT_FUNC, STT_GNU_IFUNC))
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}  # anything else (LOCAL, GNU_UNIQUE, ...) ranks 2
LAST_SYMBOL_SPAN = 4096  # a size-0 last symbol covers up to the next page boundary
_OVERLAP_PROBES = 4  # how far back a lookup looks for an enclosing (overlapping) symbol


Column: TypeAlias = "array[int] | memoryview"  # in memory, or a view of a mapped cache file


class SymbolTable:
    """Function symbols of one binary, sorted by ELF virtual address: function i spans
    [``starts[i]``, ``ends[i]``) and is named ``names[name_offsets[i]:name_offsets[i + 1]]``."""

    __slots__ = ("_ends", "_name_offsets", "_names", "_starts")

    def __init__(self, starts: Column, ends: Column, name_offsets: Column, names: bytes | memoryview) -> None:
        self._starts = starts
        self._ends = ends
        self._name_offsets = name_offsets  # one more than functions: the last is len(names)
        self._names = names  # the chosen names only, back to back

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
        return str(self._names[self._name_offsets[index] : self._name_offsets[index + 1]], "utf-8", "replace")

    def columns(self) -> tuple[Column, Column, Column, bytes | memoryview]:
        """(starts, ends, name offsets, names): what ``symbolizer.table_cache`` stores."""
        return self._starts, self._ends, self._name_offsets, self._names

    @property
    def size_bytes(self) -> int:
        """Bytes the table's columns take (in the page cache, not the heap, when mapped)."""
        return len(self._names) + sum(a.itemsize * len(a) for a in (self._starts, self._ends, self._name_offsets))


def table_of(functions: Iterable[tuple[int, int, bytes]]) -> SymbolTable:
    """The table of ``functions``, (start, end, name) sorted by start, names without NULs."""
    starts, ends, offsets, names = array("Q"), array("Q"), array("Q", [0]), bytearray()
    for start, end, name in functions:
        starts.append(start)
        ends.append(end)
        names += name
        offsets.append(len(names))
    return SymbolTable(starts, ends, offsets, bytes(names))


EMPTY_TABLE = table_of(())


class _Candidates:
    """The defined functions of every symbol table read, in columns (not a tuple each: a large
    binary has hundreds of thousands), and the string tables their names are in."""

    __slots__ = ("name_offsets", "parts", "ranks", "sizes", "strings", "values")

    def __init__(self) -> None:
        self.values = array("Q")
        self.sizes = array("Q")
        self.name_offsets = array("Q")  # into strings[parts[i]]
        self.parts = bytearray()  # which string table
        self.ranks = bytearray()  # binding rank << 1 | source rank (0: .symtab, 1: .dynsym)
        self.strings: list[bytes] = []  # each NUL-terminated (a truncated one's last name too)

    def name(self, index: int) -> bytes:
        strings, offset = self.strings[self.parts[index]], self.name_offsets[index]
        return strings[offset : strings.index(b"\0", offset)]

    def rank_key(self, index: int) -> tuple[int, int, int, int, int, int]:
        """Among symbols at one address the least wins: best binding, then fewest leading
        underscores, then .symtab, then the largest size, then the first name read."""
        rank, offset = self.ranks[index], self.name_offsets[index]
        underscores = _underscores(self.strings[self.parts[index]], offset)
        return rank >> 1, underscores, rank & 1, -self.sizes[index], self.parts[index], offset


def _entry_format(info: ElfInfo) -> tuple[struct.Struct, bool]:
    order = "<" if info.little_endian else ">"
    if info.is_64:
        return struct.Struct(order + "IBBHQQ"), True  # name, info, other, shndx, value, size
    return struct.Struct(order + "IIIBBH"), False  # name, value, size, info, other, shndx


def _collect(fd: int, info: ElfInfo, source: SymbolSource, out: _Candidates) -> None:
    """Add the defined functions of one symbol table, and its string table, to ``out``."""
    entry, is_64 = _entry_format(info)
    if source.entsize not in (0, entry.size) or len(out.strings) > 0xFF:
        return
    strtab = read_range(fd, source.strtab_offset, source.strtab_size, info.file_size)
    data = read_range(fd, source.offset, source.size, info.file_size)
    usable = len(data) - len(data) % entry.size
    source_rank = 1 if source.dynamic else 0
    limit = len(strtab)
    part = len(out.strings)
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
        out.values.append(value)
        out.sizes.append(size)
        out.name_offsets.append(name)
        out.parts.append(part)
        out.ranks.append(_BIND_RANK.get(st_info >> 4, 2) << 1 | source_rank)
    del data
    out.strings.append(strtab if strtab.endswith(b"\0") else strtab + b"\0")


def _underscores(names: bytes, offset: int) -> int:
    count = 0
    while names[offset + count] == 0x5F:  # "_"
        count += 1
    return count


def build_symbol_table(fd: int, info: ElfInfo, extra: Sequence[tuple[int, ElfInfo]] = ()) -> SymbolTable:
    """Read .symtab and .dynsym of the file open as ``fd``, and the .symtab of each debug file
    in ``extra`` (fd, info), into one ``SymbolTable``."""
    parts = [(fd, info, info.symbol_sources)]
    parts += [(debug_fd, debug, tuple(s for s in debug.symbol_sources if not s.dynamic)) for debug_fd, debug in extra]
    candidates = _Candidates()
    for part_fd, part_info, sources in parts:
        for source in sources:
            _collect(part_fd, part_info, source, candidates)
    if not candidates.values:
        return EMPTY_TABLE
    return table_of(_chosen(candidates))


def _chosen(candidates: _Candidates) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, name) of the best symbol at each address, by address. The winner keeps the
    largest size among its aliases (one may be declared without a size); a size-0 symbol ends
    where the next one starts."""
    values, sizes = candidates.values, candidates.sizes
    count = len(values)
    # Sorted by address then reading order: one int per candidate, no key objects.
    order = [value << 32 | index for index, value in enumerate(values)]
    order.sort()
    previous: tuple[int, int, int] | None = None  # (start, size, candidate) of the last winner
    at = 0
    while at < count:
        value = order[at] >> 32
        run_end = at + 1
        while run_end < count and order[run_end] >> 32 == value:
            run_end += 1
        run = [key & 0xFFFF_FFFF for key in order[at:run_end]]
        best = run[0] if len(run) == 1 else min(run, key=candidates.rank_key)
        if previous is not None:
            yield _function(*previous, value, candidates)
        previous = (value, max(sizes[index] for index in run), best)
        at = run_end
    if previous is not None:
        yield _function(*previous, (previous[0] // LAST_SYMBOL_SPAN + 1) * LAST_SYMBOL_SPAN, candidates)


def _function(start: int, size: int, best: int, next_start: int, candidates: _Candidates) -> tuple[int, int, bytes]:
    end = min(start + size, (1 << 64) - 1) if size > 0 else next_start
    return start, end, candidates.name(best)
