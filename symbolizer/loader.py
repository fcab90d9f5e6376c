"""Symbolizer stage: one binary's symbol table - shared in memory, read from the disk cache, or
built with its debug file.

In: the fd of a binary, its ``ElfInfo``, the path a process mapped it at, and an ``O_PATH`` fd of
that process's root (-1: the host's). Out: a ``LoadedTable`` - the ``SymbolTable`` shared by
every file with the same build-id (else the same file identity), and whether it is new here.

Order: the in-memory LRU; then the disk cache (``symbolizer.table_cache``, when configured,
by build-id or else file identity; its tables are mapped files); then a build, written to
the disk cache and mapped back from it. A binary without .symtab
(stripped: only .dynsym, or nothing) is completed from its separate debug file when
``symbolizer.debuginfo`` finds one, else, for a Go binary, named from its .gopclntab; a debug
file that turns out unreadable while its table is built is counted and the binary's own
tables are used. A build is written back to the disk cache, with whether it was complete; an
incomplete cached table is used only after a new look for a debug file finds none.
"""

from __future__ import annotations

from dataclasses import dataclass

from symbolizer.cache import LruCache, TableKey, table_key
from symbolizer.debuginfo import DebugLocator, DebugSymbols
from symbolizer.elf import ElfInfo, LoadSegment
from symbolizer.errors import SymbolizerError
from symbolizer.gopclntab import go_symbol_table
from symbolizer.source import SourceLines
from symbolizer.symtab import SymbolTable, build_symbol_table
from symbolizer.table_cache import SymtabDiskCache


@dataclass(frozen=True, slots=True)
class Binary:
    """What symbolization keeps of one parsed ELF file."""

    build_id: bytes
    loads: tuple[LoadSegment, ...]
    table: SymbolTable
    lines: SourceLines | None = None  # DWARF answers, when the binary or its debug file has any


@dataclass(frozen=True, slots=True)
class LoadedTable:
    table: SymbolTable
    fresh: bool  # False when an existing table (same build-id or identity) was shared


class TableLoader:
    """Loads symbol tables once per build-id (or file identity), bounded to ``capacity``."""

    def __init__(self, capacity: int, locator: DebugLocator, disk: SymtabDiskCache | None = None) -> None:
        self.tables: LruCache[TableKey, SymbolTable] = LruCache(capacity)
        self.locator = locator
        self.disk = disk
        self.debug_files: dict[str, int] = {}  # tables completed from a debug file, by DebugSource

    def load(self, fd: int, info: ElfInfo, path: str, root_fd: int = -1) -> LoadedTable:
        """The table of the binary open as ``fd``; raises ``SymbolizerError`` for the binary's own faults."""
        key = table_key(info.build_id, info.identity)
        table = self.tables.get(key)
        if table is not None:
            return LoadedTable(table, False)
        table = self._from_disk(key, fd, info, path, root_fd)
        if table is None:
            table, complete = self.build(fd, info, path, root_fd)
            table = self._stored(key, table, complete)
        self.tables.put(key, table)
        return LoadedTable(table, True)

    def _from_disk(self, key: TableKey, fd: int, info: ElfInfo, path: str, root_fd: int) -> SymbolTable | None:
        if self.disk is None:
            return None
        cached = self.disk.read(key)
        if cached is None:
            return None
        if cached.complete or info.has_symtab:
            return cached.table
        debug = self.locator.find(fd, info, path, root_fd)
        if debug is None:
            return cached.table
        table, complete = self._merge(fd, info, debug)
        return self._stored(key, table, complete)

    def _stored(self, key: TableKey, table: SymbolTable, complete: bool) -> SymbolTable:
        """``table`` written to the disk cache; the copy mapped from there when that worked (its
        columns then live in the page cache, not the heap), else ``table`` itself."""
        if self.disk is None:
            return table
        return self.disk.write(key, table, complete) or table

    def build(self, fd: int, info: ElfInfo, path: str, root_fd: int = -1) -> tuple[SymbolTable, bool]:
        """Parse the binary's tables, merged with its debug file's .symtab when it has none
        itself; and whether the result came from a .symtab (is complete)."""
        if info.has_symtab:
            return build_symbol_table(fd, info), True
        return self._merge(fd, info, self.locator.find(fd, info, path, root_fd))

    def _merge(self, fd: int, info: ElfInfo, debug: DebugSymbols | None) -> tuple[SymbolTable, bool]:
        if debug is None:
            go_table = go_symbol_table(fd, info) if info.gopclntab is not None else None
            if go_table is not None:
                return go_table, True  # a Go binary's pclntab names every function
            return build_symbol_table(fd, info), False
        try:
            table = build_symbol_table(fd, info, [(debug.fd, debug.info)])
        except SymbolizerError as err:
            self.locator.failures[err.cause.value] = self.locator.failures.get(err.cause.value, 0) + 1
            return build_symbol_table(fd, info), False
        finally:
            debug.close()
        self.debug_files[debug.source.value] = self.debug_files.get(debug.source.value, 0) + 1
        return table, True
