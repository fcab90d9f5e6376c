"""Symbolizer stage: binaries' symbol tables kept on disk between runs, keyed by build-id.

In: a ``CacheDir``, a binary's ``TableKey`` (its GNU build-id, else its file identity), and a
``SymbolTable`` with whether it is *complete* (built from a .symtab: the binary's own or its
debug file's). Out: that table and flag again, read from ``<build-id hex>.sym`` (or
``file-<dev>-<ino>-<size>-<mtime>.sym``: a binary without build-id, such as a Go program, is
named by its identity, so a rebuilt file gets a file of its own and old ones age out of the
directory) - one versioned record (``symbolizer.diskcache``) of the table's arrays and names
blob - or None.

A table read back is a set of views of the file mapped read-only (``diskcache.map_record``):
its columns stay in the page cache, and only the pages lookups touch are resident; ``write``
returns the table so mapped, for the caller to keep instead of the one it built.

Checked before use, beyond the record's sizes and CRC32: the arrays have one entry per symbol
(the name offsets one more), the first offset is 0 and the last the size of the names blob.
Offsets out of order inside it could only garble names (the CRC32 has already ruled out
accidental damage). A table that was not complete is still used, but the loader first looks
again for a debug file (one may have been installed since).
"""

from __future__ import annotations

from dataclasses import dataclass

from symbolizer.cache import TableKey, key_name
from symbolizer.diskcache import CacheDir, CacheMiss, encode_record, int_column, map_record
from symbolizer.symtab import SymbolTable

KIND_SYMTAB = 2
TABLE_VERSION = b"symtab-v2:"  # bump when tables are built differently from the same file
MAX_FILE_SIZE = 1 << 30
MAX_BUILD_ID_SIZE = 64


@dataclass(frozen=True, slots=True)
class CachedTable:
    table: SymbolTable
    complete: bool


def _file(key: TableKey) -> tuple[str, bytes] | None:
    """(file name, record key) of ``key``'s table; None for a build-id of implausible size."""
    if isinstance(key, bytes) and not 0 < len(key) <= MAX_BUILD_ID_SIZE:
        return None
    name = key_name(key)
    return f"{name}.sym", TABLE_VERSION + (key if isinstance(key, bytes) else name.encode())


class SymtabDiskCache:
    """Reads and writes symbol tables in ``cache``; counts events in ``cache.counters``."""

    def __init__(self, cache: CacheDir) -> None:
        self.cache = cache

    def read(self, key: TableKey) -> CachedTable | None:
        """The cached table of ``key``, or None (absent, stale or damaged: counted)."""
        file = _file(key)
        if file is None:
            return None
        try:
            cached = _decode(map_record(self.cache, file[0], MAX_FILE_SIZE, KIND_SYMTAB, file[1]))
        except CacheMiss as miss:
            self.cache.count(f"symtab_{miss.reason}")
            return None
        self.cache.count("symtab_hits")
        return cached

    def write(self, key: TableKey, table: SymbolTable, complete: bool) -> SymbolTable | None:
        """Store ``table``; the same table read back from the file (mapped), or None when it
        could not be written or read."""
        file = _file(key)
        if file is None:
            return None
        starts, ends, name_offsets, names = table.columns()
        sections: list[bytes | memoryview] = [
            bytes([complete]),
            memoryview(starts).cast("B"),
            memoryview(ends).cast("B"),
            memoryview(name_offsets).cast("B"),
            names,
        ]
        if not self.cache.write(file[0], encode_record(KIND_SYMTAB, file[1], sections)):
            return None
        self.cache.count("symtab_writes")
        try:
            return _decode(map_record(self.cache, file[0], MAX_FILE_SIZE, KIND_SYMTAB, file[1])).table
        except CacheMiss:  # replaced or removed meanwhile: keep the table built
            return None


def _decode(sections: list[memoryview]) -> CachedTable:
    if len(sections) != 5 or len(sections[0]) != 1:
        raise CacheMiss("corrupt", "wrong sections")
    starts, ends, name_offsets = int_column(sections[1]), int_column(sections[2]), int_column(sections[3])
    names = sections[4]
    if not len(starts) == len(ends) == len(name_offsets) - 1:
        raise CacheMiss("corrupt", "column lengths differ")
    if name_offsets[0] != 0 or name_offsets[-1] != len(names):
        raise CacheMiss("corrupt", "the name offsets do not span the names blob")
    return CachedTable(SymbolTable(starts, ends, name_offsets, names), bool(sections[0][0]))
