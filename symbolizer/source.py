"""Symbolizer stage: a binary's source view - DWARF opened once, its answers kept on disk.

In: a binary's fd and ``ElfInfo`` (plus where it was mapped and its process root, to find a
separate debug file). Out: a ``SourceLines`` answering ``lookup(elf_vaddr)`` with
``SourceFrame``s innermost first (see ``symbolizer.dwarf``), or None when neither the binary
nor its debug file carries DWARF (or libdw is missing).

Persistence (``symbolizer.source_cache``): per build-id, every address already resolved and
the DWARF index built so far (CUs' function ranges, functions' inline trees). A restarted
agent or a second ``hostflame symbolize`` run answers known addresses without opening DWARF,
and new ones without walking any DIE walked before.
"""

from __future__ import annotations

import ctypes
import os
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from symbolizer.debuginfo import DebugLocator
from symbolizer.demangle import demangle
from symbolizer.diskcache import CacheDir
from symbolizer.dwarf import DwarfIndex, SourceFrame, StoredCu
from symbolizer.dwarf_plain import plain_dwarf
from symbolizer.elf import ElfInfo, read_range
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.libdw import DwarfFile, load_libdw
from symbolizer.symtab import SymbolTable

MAX_DWARF_FILE_SIZE = 4 << 30
MAX_DWARF_BYTES = 2 << 30  # all DWARF sections of one file, decompressed
MAX_DECOMPRESSED = 1 << 30  # one section
MAX_ZLIB_RATIO = 1032  # deflate's best compression ratio

Frames = tuple[SourceFrame, ...] | None


class NamedFrame(NamedTuple):
    """A frame as shown: demangled function, the linker's name, file, line, discriminator."""

    function: str  # "" when unknown
    system_name: str
    file: str  # "" when unknown
    line: int  # 0 when unknown
    discriminator: int = 0


def name_source_frames(source: Frames, table: SymbolTable, elf_vaddr: int,
                       prefer_symbol: bool = False, nearest: bool = False) -> tuple[NamedFrame, ...] | None:
    """DWARF's frames completed by the symbol table (the outermost function's name when DWARF
    has none, or always with ``prefer_symbol``: DWARF may name an alias, ``__GI_getpid`` for
    ``getpid``), demangled; the symbol alone without DWARF; None when neither names it.
    ``nearest``: name an address past a symbol's size by that symbol anyway, as addr2line does."""
    symbol = table.lookup(elf_vaddr) or ""
    if not symbol and nearest:
        symbol = table.nearest(elf_vaddr) or ""
    if not source:
        return (NamedFrame(demangle(symbol), symbol, "", 0),) if symbol else None
    if not symbol and not source[-1].function:
        symbol = table.nearest(elf_vaddr) or ""
    out = []
    last = len(source) - 1
    for position, frame in enumerate(source):
        mangled = frame.function
        if position == last and symbol and (prefer_symbol or not mangled):
            mangled = symbol
        out.append(NamedFrame(demangle(mangled), mangled, frame.file, frame.line, frame.discriminator))
    return tuple(out)


def check_dwarf_sections(fd: int, info: ElfInfo) -> None:
    """Refuse (``SymbolizerError``) DWARF that libdw should not be handed: a section outside
    the file, more than ``MAX_DWARF_BYTES`` in all, or a compressed section claiming more than
    ``MAX_DECOMPRESSED`` bytes or more than zlib's best ratio allows (a decompression bomb)."""
    total = 0
    for section in info.dwarf_sections:
        if section.offset + section.size > info.file_size:
            raise SymbolizerError(Cause.BAD_ELF, f"{section.name} lies outside the file")
        claimed = section.size
        if section.compressed:
            header = read_range(fd, section.offset, 24 if info.is_64 else 12, info.file_size)
            fmt = ("<" if info.little_endian else ">") + ("IIQ" if info.is_64 else "III")
            claimed = struct.unpack_from(fmt, header)[2]
        elif section.name.startswith(".zdebug_"):
            header = read_range(fd, section.offset, 12, info.file_size)
            if header[:4] == b"ZLIB":
                claimed = struct.unpack_from(">Q", header, 4)[0]
        if claimed > MAX_DECOMPRESSED or claimed > section.size * MAX_ZLIB_RATIO + 4096:
            raise SymbolizerError(Cause.TOO_LARGE, f"{section.name} claims {claimed} bytes")
        total += claimed
    if total > MAX_DWARF_BYTES:
        raise SymbolizerError(Cause.TOO_LARGE, f"{total} bytes of DWARF")


class DwarfHandle:
    """One file's DWARF through libdw, which can be released and opened again: it keeps a
    duplicate fd of the file (its process may be gone by then).

    libdw keeps the file mapped and, for compressed sections, decompressed copies on the heap
    (~10 MB for libc's debug file, growing as line tables are read), so the symbolizer releases
    every handle at the end of an interval. Opening again costs a few ms for uncompressed DWARF
    (the symbolizer keeps an uncompressed copy of compressed DWARF: ``symbolizer.dwarf_plain``),
    ~45 ms for libc's compressed debug file (zlib) without one."""

    def __init__(self, lib: ctypes.CDLL, fd: int, index: DwarfIndex) -> None:
        self._lib = lib
        self._index: DwarfIndex | None = index
        try:
            self._fd = os.dup(fd)
        except OSError:  # out of fds: usable until released, then no more
            self._fd = -1
        else:
            self._close_fd = weakref.finalize(self, os.close, self._fd)  # also if never closed

    def index(self) -> DwarfIndex | None:
        """The open index, opening the file again if it was released; None if that fails."""
        if self._index is None and self._fd >= 0:
            try:
                self._index = DwarfIndex(DwarfFile(self._lib, self._fd))
            except ValueError:
                return None
        return self._index

    def release(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def close(self) -> None:
        self.release()
        if self._fd >= 0:
            self._close_fd()
            self._fd = -1


def open_dwarf(fd: int, info: ElfInfo, path: str, root_fd: int, locator: DebugLocator | None, *,
               plain: CacheDir | None = None) -> DwarfHandle | None:
    """DWARF of the binary itself, else of its separate debug file; None when neither has any.
    Raises ``SymbolizerError`` when the DWARF sections fail ``check_dwarf_sections``.
    ``plain``: where compressed DWARF is kept decompressed (``symbolizer.dwarf_plain``), for
    libdw to map rather than decompress each time it is opened."""
    lib = load_libdw()
    if lib is None or info.file_size > MAX_DWARF_FILE_SIZE:
        return None
    if info.dwarf_sections:
        check_dwarf_sections(fd, info)
        handle = _handle(lib, fd, info, plain)
        if handle is not None:
            return handle
    if locator is None:
        return None
    debug = locator.find(fd, info, path, root_fd)
    if debug is None:
        return None
    try:
        if not debug.info.dwarf_sections:
            return None
        check_dwarf_sections(debug.fd, debug.info)
        return _handle(lib, debug.fd, debug.info, plain)
    finally:
        debug.close()


def _handle(lib: ctypes.CDLL, fd: int, info: ElfInfo, plain: CacheDir | None) -> DwarfHandle | None:
    """A handle on the DWARF of ``fd`` (through its uncompressed copy when there is one), or
    None when libdw finds none. The handle keeps its own fd."""
    copy = plain_dwarf(fd, info, plain) if plain is not None else None
    try:
        for candidate in (copy, fd):
            if candidate is None:
                continue
            try:
                return DwarfHandle(lib, candidate, DwarfIndex(DwarfFile(lib, candidate)))
            except ValueError:
                continue
        return None
    finally:
        if copy is not None:
            os.close(copy)


@dataclass(slots=True)
class StoredSource:
    """What the disk cache keeps per build-id: answers by address, and the DWARF index's CUs."""

    answers: dict[int, Frames] = field(default_factory=dict)
    cus: list[StoredCu] = field(default_factory=list)


class SourceLines:
    """Answers for one build-id: from the disk cache first, else from DWARF opened on demand
    (its index restored from the disk cache, so no DIE is walked twice across runs).
    ``release`` closes the DWARF until the next address that needs it; ``used`` says whether
    DWARF was asked since its owner last cleared it."""

    def __init__(self, stored: StoredSource, opener: Callable[[], DwarfHandle | None],
                 index_reader: Callable[[], list[StoredCu]] | None = None) -> None:
        self.answers = stored.answers
        self._index_reader = index_reader
        self._opener: Callable[[], DwarfHandle | None] | None = opener
        self._handle: DwarfHandle | None = None
        self._index: DwarfIndex | None = None
        self.new: dict[int, Frames] = {}
        self.used = False

    def stored(self) -> tuple[StoredSource, bool] | None:
        """What to write back to the disk cache and whether the index changed; None when
        nothing new was learned."""
        dirty = self._index is not None and self._index.dirty
        if not self.new and not dirty:
            return None
        self.new.clear()
        cus = self._index.export() if dirty and self._index is not None else []
        return StoredSource(self.answers, cus), dirty

    def _open(self) -> DwarfIndex | None:
        if self._index is not None:
            return self._index
        if self._opener is not None:
            self._handle = self._opener()
            self._opener = None
        if self._handle is None:
            return None
        self._index = self._handle.index()
        if self._index is not None and self._index_reader is not None:
            self._index.restore(self._index_reader())
        return self._index

    def lookup(self, elf_vaddr: int) -> Frames:
        if elf_vaddr in self.answers:
            return self.answers[elf_vaddr]
        self.used = True
        index = self._open()
        if index is None:
            return None
        frames = index.lookup(elf_vaddr)
        self.answers[elf_vaddr] = frames
        self.new[elf_vaddr] = frames
        return frames

    @property
    def is_open(self) -> bool:
        return self._index is not None

    def release(self) -> None:
        """Close the DWARF (write ``stored()`` first: the index built since is dropped with it)."""
        if self._handle is not None:
            self._handle.release()
        self._index = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._index = None
        self._opener = None
