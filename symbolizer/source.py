"""Symbolizer stage: a binary's source view - DWARF opened once, its answers kept on disk.

In: a binary's fd and ``ElfInfo`` (plus where it was mapped and its process root, to find a
separate debug file). Out: a ``SourceLines`` answering ``lookup(elf_vaddr)`` with
``SourceFrame``s innermost first (see ``symbolizer.dwarf``), or None when neither the binary
nor its debug file carries DWARF (or libdw is missing).

Persistence: ``SourceDiskCache`` keeps, per build-id, every address already resolved
(``<build-id hex>.dwarf``, one record of ``symbolizer.diskcache``, JSON inside, checked
field by field before use). A restarted agent or a second ``hostflame symbolize`` run answers
those addresses without opening DWARF; a new address opens it lazily.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import NamedTuple

from symbolizer.debuginfo import DebugLocator
from symbolizer.demangle import demangle
from symbolizer.diskcache import CacheDir, CacheMiss, decode_record, encode_record
from symbolizer.dwarf import DwarfIndex, SourceFrame
from symbolizer.elf import ElfInfo, read_range
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.libdw import DwarfFile, load_libdw
from symbolizer.symtab import SymbolTable

KIND_SOURCE = 3
SOURCE_VERSION = b"dwarf-v1:"
MAX_FILE_SIZE = 256 << 20
MAX_BUILD_ID_SIZE = 64
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


def open_dwarf(fd: int, info: ElfInfo, path: str, root_fd: int, locator: DebugLocator | None) -> DwarfIndex | None:
    """DWARF of the binary itself, else of its separate debug file; None when neither has any.
    Raises ``SymbolizerError`` when the DWARF sections fail ``check_dwarf_sections``."""
    lib = load_libdw()
    if lib is None or info.file_size > MAX_DWARF_FILE_SIZE:
        return None
    if info.dwarf_sections:
        check_dwarf_sections(fd, info)
        try:
            return DwarfIndex(DwarfFile(lib, fd))
        except ValueError:
            pass
    if locator is None:
        return None
    debug = locator.find(fd, info, path, root_fd)
    if debug is None:
        return None
    try:
        if not debug.info.dwarf_sections:
            return None
        check_dwarf_sections(debug.fd, debug.info)
        return DwarfIndex(DwarfFile(lib, debug.fd))  # libdw maps the file: the fd may close
    except ValueError:
        return None
    finally:
        debug.close()


class SourceLines:
    """Answers for one build-id: from the disk cache first, else from DWARF opened on demand."""

    def __init__(self, cached: dict[int, Frames], opener: Callable[[], DwarfIndex | None]) -> None:
        self.answers = cached
        self._opener: Callable[[], DwarfIndex | None] | None = opener
        self._index: DwarfIndex | None = None
        self.new: dict[int, Frames] = {}

    @property
    def has_dwarf(self) -> bool:
        return bool(self.answers) or self._open() is not None

    def _open(self) -> DwarfIndex | None:
        if self._opener is not None:
            self._index = self._opener()
            self._opener = None
        return self._index

    def lookup(self, elf_vaddr: int) -> Frames:
        if elf_vaddr in self.answers:
            return self.answers[elf_vaddr]
        index = self._open()
        if index is None:
            return None
        frames = index.lookup(elf_vaddr)
        self.answers[elf_vaddr] = frames
        self.new[elf_vaddr] = frames
        return frames

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        self._opener = None


class SourceDiskCache:
    """Per build-id answers on disk; events counted in ``cache.counters`` (``dwarf_*``)."""

    def __init__(self, cache: CacheDir) -> None:
        self.cache = cache

    def read(self, build_id: bytes) -> dict[int, Frames]:
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return {}
        try:
            data = self.cache.read(f"{build_id.hex()}.dwarf", MAX_FILE_SIZE)
            sections = decode_record(data, KIND_SOURCE, SOURCE_VERSION + build_id)
            if len(sections) != 1:
                raise CacheMiss("corrupt", "wrong sections")
            answers = _decode(bytes(sections[0]))
        except CacheMiss as miss:
            self.cache.count(f"dwarf_{miss.reason}")
            return {}
        self.cache.count("dwarf_hits")
        return answers

    def write(self, build_id: bytes, answers: dict[int, Frames]) -> None:
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return
        blob = json.dumps(
            [[addr, None if frames is None else [list(frame) for frame in frames]] for addr, frames in answers.items()],
            separators=(",", ":"),
        ).encode()
        if self.cache.write(f"{build_id.hex()}.dwarf", encode_record(KIND_SOURCE, SOURCE_VERSION + build_id, [blob])):
            self.cache.count("dwarf_writes")


def _decode(blob: bytes) -> dict[int, Frames]:
    try:
        rows = json.loads(blob)
    except ValueError as err:
        raise CacheMiss("corrupt", "not JSON") from err
    if not isinstance(rows, list):
        raise CacheMiss("corrupt", "not a list")
    out: dict[int, Frames] = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], int)):
            raise CacheMiss("corrupt", "bad row")
        if row[1] is None:
            out[row[0]] = None
            continue
        frames = []
        for frame in row[1]:
            if not (isinstance(frame, list) and len(frame) == 4 and isinstance(frame[0], str)
                    and isinstance(frame[1], str) and isinstance(frame[2], int) and isinstance(frame[3], int)):
                raise CacheMiss("corrupt", "bad frame")
            frames.append(SourceFrame(frame[0], frame[1], frame[2], frame[3]))
        out[row[0]] = tuple(frames)
    return out
