"""Symbolizer stage: separate debug files that complete a stripped binary's symbol table.

In: a binary's fd and ``ElfInfo``, the path it was mapped at, and an ``O_PATH`` fd of the root
of a process mapping it (-1 when that is the host's root). Out: a ``DebugSymbols`` (an fd and
``ElfInfo`` of an ELF file whose .symtab covers the binary) or None; every rejected candidate
is counted in ``DebugLocator.failures`` by ``Cause`` value.

Candidates, in gdb's order, each looked up inside the process's root first (a walk that never
leaves it, see ``symbolizer.files``), then on the host:
1. ``{debug_root}/.build-id/xx/yyyy.debug`` from the binary's build-id; accepted only when the
   debug file carries the same build-id.
2. The ``.gnu_debuglink`` name: beside the binary, in ``.debug/`` beside it, then under
   ``{debug_root}/{directory of the binary}``; accepted only when the CRC32 of the whole file
   is the one the link records (and, when both have one, the build-ids agree).
3. MiniDebugInfo: the binary's own ``.gnu_debugdata`` section, an xz-compressed ELF holding a
   .symtab (Fedora); decompressed (capped) into a memfd.
Every candidate must also have the binary's ELF class, byte order and machine, and a .symtab.
"""

from __future__ import annotations

import enum
import lzma
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from symbolizer.elf import ElfInfo, read_elf_info, read_range
from symbolizer.errors import Cause, SymbolizerError, cause_of_os_error
from symbolizer.files import DELETED_SUFFIX, open_beneath_fd, open_root

MAX_DEBUG_FILE_SIZE = 4 << 30
MAX_DEBUGLINK_SIZE = 4096
MAX_MINIDEBUG_COMPRESSED = 64 << 20
MAX_MINIDEBUG_SIZE = 256 << 20  # decompressed
CRC_CHUNK = 1 << 20
MAX_NAME_BYTES = 255


class DebugSource(enum.StrEnum):
    """Where the symbols completing a binary came from; keys of ``SymbolizerStats.debug_files``."""

    BUILD_ID = "build_id"
    DEBUGLINK = "debuglink"
    MINIDEBUGINFO = "minidebuginfo"


@dataclass(frozen=True, slots=True)
class DebugSymbols:
    """An open debug file (the caller closes ``fd``) and its headers."""

    fd: int
    info: ElfInfo
    source: DebugSource

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True, slots=True)
class Debuglink:
    """The contents of a .gnu_debuglink section."""

    name: str
    crc: int


class DebugLocator:
    """Finds and verifies the debug file of a binary; see the module docstring for the order."""

    def __init__(self, debug_roots: Sequence[str] = ("/usr/lib/debug",), host_root: str = "/") -> None:
        self._debug_roots = tuple(root.rstrip("/") for root in debug_roots if root.startswith("/"))
        self._host_root = host_root
        self.failures: dict[str, int] = {}  # candidates rejected, by Cause value

    def find(self, fd: int, info: ElfInfo, path: str, root_fd: int = -1) -> DebugSymbols | None:
        """The best debug file for the binary open as ``fd`` (mapped at ``path``), or None."""
        link = self._debuglink(fd, info)
        roots: list[int] = []
        try:
            if root_fd >= 0:
                roots.append(os.dup(root_fd))
            roots.append(open_root(self._host_root))
        except (OSError, SymbolizerError):
            pass
        try:
            for root in roots:
                found = self._find_in(root, fd, info, path, link)
                if found is not None:
                    return found
        finally:
            for root in roots:
                os.close(root)
        if info.debugdata is not None:
            return self._minidebuginfo(fd, info)
        return None

    def _find_in(self, root: int, fd: int, info: ElfInfo, path: str, link: Debuglink | None) -> DebugSymbols | None:
        if len(info.build_id) >= 2:
            hexid = info.build_id.hex()
            for debug_root in self._debug_roots:
                candidate = f"{debug_root}/.build-id/{hexid[:2]}/{hexid[2:]}.debug"
                found = self._try(root, candidate, fd, info, None)
                if found is not None:
                    return found
        binary_path = path.removesuffix(DELETED_SUFFIX)
        if link is None or not binary_path.startswith("/"):
            return None
        directory = os.path.dirname(binary_path).rstrip("/")
        candidates = [f"{directory}/{link.name}", f"{directory}/.debug/{link.name}"]
        candidates += [f"{debug_root}{directory}/{link.name}" for debug_root in self._debug_roots]
        for candidate in candidates:
            found = self._try(root, candidate, fd, info, link)
            if found is not None:
                return found
        return None

    def _try(self, root: int, path: str, fd: int, info: ElfInfo, link: Debuglink | None) -> DebugSymbols | None:
        """Open and verify one candidate: by build-id when ``link`` is None, else by its CRC32."""
        try:
            candidate = open_beneath_fd(root, path, MAX_DEBUG_FILE_SIZE, path)
        except SymbolizerError as err:
            if err.cause is not Cause.GONE:  # absent is the normal case, not a failure
                self._count(err.cause)
            return None
        try:
            debug = self._verify(candidate, fd, info, None if link is None else link.crc)
        except SymbolizerError as err:
            os.close(candidate)
            if err.cause is not Cause.GONE:
                self._count(err.cause)
            return None
        except BaseException:
            os.close(candidate)
            raise
        return DebugSymbols(candidate, debug, DebugSource.BUILD_ID if link is None else DebugSource.DEBUGLINK)

    @staticmethod
    def _verify(candidate: int, fd: int, info: ElfInfo, crc: int | None) -> ElfInfo:
        try:
            mine, theirs = os.fstat(candidate), os.fstat(fd)
        except OSError as err:
            raise SymbolizerError(cause_of_os_error(err), f"fstat failed: {err.strerror}") from err
        if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
            raise SymbolizerError(Cause.GONE, "the debug link names the binary itself")
        debug = read_elf_info(candidate)
        _check_matches(debug, info, require_build_id=crc is None)
        if crc is not None and file_crc32(candidate, debug.file_size) != crc:
            raise SymbolizerError(Cause.DEBUG_MISMATCH, "CRC32 differs from the one in .gnu_debuglink")
        if not debug.has_symtab:
            raise SymbolizerError(Cause.NO_SYMBOLS, "debug file without .symtab")
        return debug

    def _debuglink(self, fd: int, info: ElfInfo) -> Debuglink | None:
        if info.debuglink is None:
            return None
        try:
            size = min(info.debuglink.size, MAX_DEBUGLINK_SIZE)
            return parse_debuglink(read_range(fd, info.debuglink.offset, size, info.file_size), info.little_endian)
        except SymbolizerError as err:
            self._count(err.cause)
            return None

    def _minidebuginfo(self, fd: int, info: ElfInfo) -> DebugSymbols | None:
        assert info.debugdata is not None
        memfd = -1
        try:
            section = info.debugdata
            packed = read_range(fd, section.offset, section.size, info.file_size, MAX_MINIDEBUG_COMPRESSED)
            elf = decompress_xz(packed, MAX_MINIDEBUG_SIZE)
            memfd = os.memfd_create("hostflame-minidebuginfo", os.MFD_CLOEXEC)
            _write_all(memfd, elf)
            debug = read_elf_info(memfd)
            _check_matches(debug, info, require_build_id=False)
            if not debug.has_symtab:
                raise SymbolizerError(Cause.NO_SYMBOLS, "MiniDebugInfo without .symtab")
        except SymbolizerError as err:
            if memfd >= 0:
                os.close(memfd)
            self._count(err.cause)
            return None
        except OSError as err:
            if memfd >= 0:
                os.close(memfd)
            self._count(cause_of_os_error(err))
            return None
        return DebugSymbols(memfd, debug, DebugSource.MINIDEBUGINFO)

    def _count(self, cause: Cause) -> None:
        self.failures[cause.value] = self.failures.get(cause.value, 0) + 1


def _check_matches(debug: ElfInfo, info: ElfInfo, require_build_id: bool) -> None:
    if (debug.is_64, debug.little_endian, debug.machine) != (info.is_64, info.little_endian, info.machine):
        raise SymbolizerError(Cause.DEBUG_MISMATCH, "ELF class, byte order or machine differs from the binary")
    if require_build_id and debug.build_id != info.build_id:
        raise SymbolizerError(Cause.DEBUG_MISMATCH, "build-id differs from the binary's")
    if debug.build_id and info.build_id and debug.build_id != info.build_id:
        raise SymbolizerError(Cause.DEBUG_MISMATCH, "build-id differs from the binary's")


def parse_debuglink(data: bytes, little_endian: bool) -> Debuglink:
    """Name and CRC32 from a .gnu_debuglink section: NUL-terminated name, pad to 4, CRC."""
    end = data.find(b"\0")
    crc_at = (end + 4) & ~3
    if end <= 0 or crc_at + 4 > len(data) or end > MAX_NAME_BYTES:
        raise SymbolizerError(Cause.BAD_ELF, "malformed .gnu_debuglink")
    raw = data[:end]
    if b"/" in raw or raw in (b".", b".."):
        raise SymbolizerError(Cause.BAD_ELF, ".gnu_debuglink names a path, not a file")
    (crc,) = struct.unpack_from("<I" if little_endian else ">I", data, crc_at)
    return Debuglink(os.fsdecode(raw), crc)


def file_crc32(fd: int, size: int) -> int:
    """CRC32 (the one .gnu_debuglink records, zlib's) of the first ``size`` bytes of ``fd``."""
    crc = 0
    offset = 0
    while offset < size:
        try:
            chunk = os.pread(fd, min(CRC_CHUNK, size - offset), offset)
        except OSError as err:
            raise SymbolizerError(cause_of_os_error(err), f"read failed: {err.strerror}") from err
        if not chunk:
            raise SymbolizerError(Cause.BAD_ELF, "file shrank while its CRC was computed")
        crc = zlib.crc32(chunk, crc)
        offset += len(chunk)
    return crc


def decompress_xz(data: bytes, cap: int) -> bytes:
    """Decompress one xz stream of at most ``cap`` bytes; anything else is BAD_COMPRESSED or TOO_LARGE."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = decompressor.decompress(data, max_length=cap)
    except lzma.LZMAError as err:
        raise SymbolizerError(Cause.BAD_COMPRESSED, f"xz: {err}") from err
    if not decompressor.eof:
        if not decompressor.needs_input:
            raise SymbolizerError(Cause.TOO_LARGE, f"MiniDebugInfo decompresses to more than {cap} bytes")
        raise SymbolizerError(Cause.BAD_COMPRESSED, "xz stream truncated")
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
