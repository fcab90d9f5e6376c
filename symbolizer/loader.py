"""Symbolizer stage: one binary's symbol table, shared in memory or built with its debug file.

In: the fd of a binary, its ``ElfInfo``, the path a process mapped it at, and an ``O_PATH`` fd of
that process's root (-1: the host's). Out: a ``LoadedTable`` - the ``SymbolTable`` shared by
every file with the same build-id (else the same file identity), and whether it was built now.

A binary without .symtab (stripped: only .dynsym, or nothing) is completed from its separate
debug file when ``symbolizer.debuginfo`` finds one; a debug file that turns out unreadable
while its table is built is counted and the binary's own tables are used.
"""

from __future__ import annotations

from dataclasses import dataclass

from symbolizer.cache import LruCache, TableKey, table_key
from symbolizer.debuginfo import DebugLocator
from symbolizer.elf import ElfInfo
from symbolizer.errors import SymbolizerError
from symbolizer.symtab import SymbolTable, build_symbol_table


@dataclass(frozen=True, slots=True)
class LoadedTable:
    table: SymbolTable
    fresh: bool  # False when an existing table (same build-id or identity) was shared


class TableLoader:
    """Builds symbol tables once per build-id (or file identity), bounded to ``capacity``."""

    def __init__(self, capacity: int, locator: DebugLocator) -> None:
        self.tables: LruCache[TableKey, SymbolTable] = LruCache(capacity)
        self.locator = locator
        self.debug_files: dict[str, int] = {}  # tables completed from a debug file, by DebugSource

    def load(self, fd: int, info: ElfInfo, path: str, root_fd: int = -1) -> LoadedTable:
        """The table of the binary open as ``fd``; raises ``SymbolizerError`` for the binary's own faults."""
        key = table_key(info.build_id, info.identity)
        table = self.tables.get(key)
        if table is not None:
            return LoadedTable(table, False)
        table = self.build(fd, info, path, root_fd)
        self.tables.put(key, table)
        return LoadedTable(table, True)

    def build(self, fd: int, info: ElfInfo, path: str, root_fd: int = -1) -> SymbolTable:
        """Parse the binary's tables, merged with its debug file's .symtab when it has none itself."""
        if info.has_symtab:
            return build_symbol_table(fd, info)
        debug = self.locator.find(fd, info, path, root_fd)
        if debug is None:
            return build_symbol_table(fd, info)
        try:
            table = build_symbol_table(fd, info, [(debug.fd, debug.info)])
        except SymbolizerError as err:
            self.locator.failures[err.cause.value] = self.locator.failures.get(err.cause.value, 0) + 1
            return build_symbol_table(fd, info)
        finally:
            debug.close()
        self.debug_files[debug.source.value] = self.debug_files.get(debug.source.value, 0) + 1
        return table
