"""Symbolizer stage: binaries' symbol tables kept on disk between runs, keyed by build-id.

In: a ``CacheDir``, a GNU build-id, and a ``SymbolTable`` with whether it is *complete* (built
from a .symtab: the binary's own or its debug file's). Out: that table and flag again, read
from ``<build-id hex>.sym`` - one versioned record (``symbolizer.diskcache``) of the table's
arrays and names blob - or None. A binary without a build-id is never cached on disk (its
content has no name that outlives the file).

Checked before use, beyond the record's sizes and CRC32: the three arrays have one entry per
symbol, the names blob ends with NUL and every name offset lies inside it. A table that was
not complete is still used, but the loader first looks again for a debug file (one may have
been installed since).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from symbolizer.diskcache import CacheDir, CacheMiss, decode_record, encode_record
from symbolizer.symtab import SymbolTable

KIND_SYMTAB = 2
TABLE_VERSION = b"symtab-v1:"  # bump when tables are built differently from the same file
MAX_FILE_SIZE = 1 << 30
MAX_BUILD_ID_SIZE = 64


@dataclass(frozen=True, slots=True)
class CachedTable:
    table: SymbolTable
    complete: bool


def _name(build_id: bytes) -> str:
    return f"{build_id.hex()}.sym"


def _array(raw: memoryview) -> array[int]:
    out = array("Q")
    if len(raw) % out.itemsize:
        raise CacheMiss("corrupt", f"array of {len(raw)} bytes")
    out.frombytes(raw)
    return out


class SymtabDiskCache:
    """Reads and writes symbol tables in ``cache``; counts events in ``cache.counters``."""

    def __init__(self, cache: CacheDir) -> None:
        self.cache = cache

    def read(self, build_id: bytes) -> CachedTable | None:
        """The cached table of ``build_id``, or None (absent, stale or damaged: counted)."""
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return None
        try:
            data = self.cache.read(_name(build_id), MAX_FILE_SIZE)
            cached = _decode(decode_record(data, KIND_SYMTAB, TABLE_VERSION + build_id))
        except CacheMiss as miss:
            self.cache.count(f"symtab_{miss.reason}")
            return None
        self.cache.count("symtab_hits")
        return cached

    def write(self, build_id: bytes, table: SymbolTable, complete: bool) -> None:
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return
        starts, ends, name_offsets, names = table.columns()
        sections: list[bytes | memoryview] = [
            bytes([complete]),
            memoryview(starts).cast("B"),
            memoryview(ends).cast("B"),
            memoryview(name_offsets).cast("B"),
            names,
        ]
        if self.cache.write(_name(build_id), encode_record(KIND_SYMTAB, TABLE_VERSION + build_id, sections)):
            self.cache.count("symtab_writes")


def _decode(sections: list[memoryview]) -> CachedTable:
    if len(sections) != 5 or len(sections[0]) != 1:
        raise CacheMiss("corrupt", "wrong sections")
    starts, ends, name_offsets = _array(sections[1]), _array(sections[2]), _array(sections[3])
    names = bytes(sections[4])
    if not len(starts) == len(ends) == len(name_offsets):
        raise CacheMiss("corrupt", "column lengths differ")
    if not names.endswith(b"\0") or (name_offsets and max(name_offsets) >= len(names)):
        raise CacheMiss("corrupt", "a name lies outside the names blob")
    return CachedTable(SymbolTable(starts, ends, name_offsets, names), bool(sections[0][0]))
