"""Symbolizer stage: binaries' symbol tables kept on disk between runs, keyed by build-id.

In: a ``CacheDir``, a GNU build-id, and a ``SymbolTable`` with whether it is *complete* (built
from a .symtab: the binary's own or its debug file's). Out: that table and flag again, read
from ``<build-id hex>.sym`` - one versioned record (``symbolizer.diskcache``) of the table's
arrays and names blob - or None. A binary without a build-id is never cached on disk (its
content has no name that outlives the file).

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


def _name(build_id: bytes) -> str:
    return f"{build_id.hex()}.sym"


class SymtabDiskCache:
    """Reads and writes symbol tables in ``cache``; counts events in ``cache.counters``."""

    def __init__(self, cache: CacheDir) -> None:
        self.cache = cache

    def read(self, build_id: bytes) -> CachedTable | None:
        """The cached table of ``build_id``, or None (absent, stale or damaged: counted)."""
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return None
        try:
            cached = _decode(map_record(self.cache, _name(build_id), MAX_FILE_SIZE, KIND_SYMTAB,
                                        TABLE_VERSION + build_id))
        except CacheMiss as miss:
            self.cache.count(f"symtab_{miss.reason}")
            return None
        self.cache.count("symtab_hits")
        return cached

    def write(self, build_id: bytes, table: SymbolTable, complete: bool) -> SymbolTable | None:
        """Store ``table``; the same table read back from the file (mapped), or None when it
        could not be written or read."""
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return None
        starts, ends, name_offsets, names = table.columns()
        sections: list[bytes | memoryview] = [
            bytes([complete]),
            memoryview(starts).cast("B"),
            memoryview(ends).cast("B"),
            memoryview(name_offsets).cast("B"),
            names,
        ]
        if not self.cache.write(_name(build_id), encode_record(KIND_SYMTAB, TABLE_VERSION + build_id, sections)):
            return None
        self.cache.count("symtab_writes")
        try:
            return _decode(map_record(self.cache, _name(build_id), MAX_FILE_SIZE, KIND_SYMTAB,
                                      TABLE_VERSION + build_id)).table
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
