"""Symbolizer stage: one ELF file named offline, address by address (``hostflame symbolize``).

In: a path to an ELF file, ``elf_vaddr``s, and optionally a persistent cache directory. Out:
per address the frames innermost first, as (demangled function, mangled function, file, line,
discriminator): DWARF when the file (or its separate debug file) has it, else the symbol
table; the outermost function's name comes from the symbol table when DWARF has none.
"""

from __future__ import annotations

import os

from symbolizer.debuginfo import DebugLocator
from symbolizer.debuginfod import Debuginfod
from symbolizer.diskcache import CacheDir
from symbolizer.elf import read_elf_info
from symbolizer.errors import SymbolizerError
from symbolizer.files import open_regular
from symbolizer.loader import TableLoader
from symbolizer.source import DwarfHandle, NamedFrame, SourceLines, StoredSource, name_source_frames, open_dwarf
from symbolizer.source_cache import SourceDiskCache

MAX_FILE_SIZE = 4 << 30
MAX_CACHE_BYTES = 1 << 30
MAX_MEMO = 1 << 20


class FileSymbolizer:
    """Names ELF virtual addresses of one file; ``close`` writes new answers to the cache."""

    def __init__(self, path: str, cache_dir: str | None = None,
                 debug_roots: tuple[str, ...] = ("/usr/lib/debug",), debuginfod: Debuginfod | None = None) -> None:
        """Raises ``SymbolizerError`` (or ``OSError``) when the file cannot be read as ELF.
        ``debuginfod``: asked (now: this is not the sampling path) for the debug file of a
        file that carries neither DWARF nor .symtab."""
        fd = open_regular(path, MAX_FILE_SIZE)
        try:
            info = read_elf_info(fd)
            if debuginfod is not None:
                debug_roots = (*debug_roots, debuginfod.cache_dir)
                if info.build_id and not info.dwarf_sections:
                    debuginfod.fetch(info.build_id)
            locator = DebugLocator(debug_roots)
            self._table, _complete = TableLoader(1, locator).build(fd, info, os.path.abspath(path))
            self._build_id = info.build_id
            self._disk = None
            if cache_dir:
                self._disk = SourceDiskCache(CacheDir(os.path.join(cache_dir, "dwarf"), MAX_CACHE_BYTES))
            cached = self._disk.read(info.build_id) if self._disk is not None else StoredSource()
            dup = os.dup(fd)

            def opener() -> DwarfHandle | None:
                try:
                    return open_dwarf(dup, info, os.path.abspath(path), -1, locator)
                except SymbolizerError:
                    return None  # hostile DWARF: the symbol table alone names the file
                finally:
                    os.close(dup)

            disk = self._disk
            self._lines = SourceLines(cached, opener, (lambda: disk.read_index(info.build_id)) if disk else None)
            self._named: dict[int, tuple[NamedFrame, ...] | None] = {}
        finally:
            os.close(fd)

    def frames(self, elf_vaddr: int) -> tuple[NamedFrame, ...] | None:
        """Innermost first; None when nothing names the address."""
        if elf_vaddr in self._named:
            return self._named[elf_vaddr]
        named = name_source_frames(self._lines.lookup(elf_vaddr), self._table, elf_vaddr, nearest=True)
        if len(self._named) >= MAX_MEMO:
            self._named.clear()
        self._named[elf_vaddr] = named
        return named

    def close(self) -> None:
        stored = self._lines.stored() if self._disk is not None else None
        if self._disk is not None and stored is not None:
            self._disk.write(self._build_id, *stored)
        self._lines.close()
