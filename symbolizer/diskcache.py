"""Symbolizer stage: persistent cache files - one record format, one bounded directory.

In: a record kind, a key (bytes) and sections (bytes-like: arrays, name blobs). Out: the same
sections again from a file, or ``CacheMiss`` - never a structure built from unchecked bytes.

Record layout (native byte order for the arrays; the header says which):

    header  magic "HFSYMC\\0\\1", format version u16, kind u8, little-endian u8,
            key length u32, section count u32, CRC32 u32 of everything after the header
    key     key length bytes
    lengths section count x u64
    padding to 8, then each section padded to 8

A record whose version, kind, byte order or key differ is *stale*; one without the magic, whose
sizes do not add up to the file's, or whose CRC32 differs, is *corrupt*. Either way the caller rebuilds and
rewrites it. ``CacheDir`` writes atomically (a temporary file in the same directory, then
``rename``), creates directories 0700 and files 0600 (kernel addresses are secrets), opens
with ``O_NOFOLLOW``, touches a file's mtime when it is read, and keeps its directory under
``max_bytes`` by deleting the least recently used files.

``map_record`` maps a record's file read-only instead of reading it: the symbol tables built on
its sections then live in the page cache, and only the pages lookups touch count as the
agent's resident memory (the pages the CRC32 check read are released again, and
``CacheDir.release_pages`` releases those lookups touched: the kernel maps 64 KiB around each
page a lookup faults in, so a day of lookups would otherwise keep most of a file resident).
That relies on every writer replacing files by ``rename`` (as ``CacheDir.write`` does), never
rewriting one in place: a mapped file truncated underneath would fault.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import struct
import sys
import tempfile
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import Literal

log = logging.getLogger(__name__)

MAGIC = b"HFSYMC\0\1"
FORMAT_VERSION = 1
MAX_KEY_SIZE = 4096
MAX_SECTIONS = 64
TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 600.0  # a temporary file older than this was left by a crashed writer
_HEADER = struct.Struct("<8sHBBIII")
_LITTLE = sys.byteorder == "little"

Buffer = bytes | bytearray | memoryview


class CacheMiss(Exception):
    """A record that cannot be used; ``reason`` is "absent", "stale" or "corrupt"."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


def _pad(size: int) -> int:
    return -size % 8


def encode_record(kind: int, key: bytes, sections: Sequence[Buffer]) -> bytes:
    """The bytes of one record holding ``sections`` (each as raw bytes)."""
    if len(key) > MAX_KEY_SIZE or len(sections) > MAX_SECTIONS:
        raise ValueError("key or section count above the format's limits")
    raws = [bytes(section) for section in sections]
    parts = [key, struct.pack(f"<{len(raws)}Q", *(len(raw) for raw in raws))]
    parts.append(b"\0" * _pad(len(key) + 8 * len(raws)))
    for raw in raws:
        parts += (raw, b"\0" * _pad(len(raw)))
    body = b"".join(parts)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, kind, _LITTLE, len(key), len(raws), zlib.crc32(body))
    return header + body


def decode_record(data: Buffer | mmap.mmap, kind: int, key: bytes) -> list[memoryview]:
    """The sections of ``data``, a whole record file; raises ``CacheMiss`` unless every size adds up."""
    if len(data) < _HEADER.size:
        raise CacheMiss("corrupt", "shorter than a header")
    magic, version, found_kind, little, key_size, count, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CacheMiss("corrupt", "not a hostflame cache record")
    if version != FORMAT_VERSION or found_kind != kind or little != _LITTLE:
        raise CacheMiss("stale", "another format, version, kind or byte order")
    if key_size > MAX_KEY_SIZE or count > MAX_SECTIONS:
        raise CacheMiss("corrupt", "implausible header")
    view = memoryview(data)
    at = _HEADER.size
    lengths_at = at + key_size
    sections_at = lengths_at + 8 * count
    sections_at += _pad(sections_at - at)
    if sections_at > len(data):
        raise CacheMiss("corrupt", "truncated header")
    if view[at:lengths_at] != key:
        raise CacheMiss("stale", "another key")
    lengths = struct.unpack_from(f"<{count}Q", data, lengths_at)
    if sections_at + sum(length + _pad(length) for length in lengths) != len(data):
        raise CacheMiss("corrupt", "section sizes do not add up to the file size")
    if zlib.crc32(view[at:]) != crc:
        raise CacheMiss("corrupt", "CRC32 mismatch")
    out = []
    for length in lengths:
        out.append(view[sections_at : sections_at + length])
        sections_at += length + _pad(length)
    return out


def int_column(raw: memoryview, typecode: Literal["Q", "I"] = "Q") -> memoryview:
    """Section ``raw`` (8-aligned in the file) as native unsigned integers (``typecode`` "Q":
    64-bit, "I": 32-bit); ``CacheMiss("corrupt")`` when its size is not a multiple."""
    if len(raw) % (8 if typecode == "Q" else 4):
        raise CacheMiss("corrupt", f"{typecode} array of {len(raw)} bytes")
    return raw.cast(typecode)


def map_record(cache: CacheDir, name: str, max_size: int, kind: int, key: bytes) -> list[memoryview]:
    """The sections of record file ``name``, as views of its read-only mapping (see the module
    docstring); raises ``CacheMiss`` as ``CacheDir.read`` and ``decode_record`` do."""
    mapped = cache.map(name, max_size)
    sections = decode_record(mapped, kind, key)
    _release(mapped)  # the check read every page
    return sections


def _release(mapped: mmap.mmap) -> None:
    """Unmap the pages of read-only file mapping ``mapped`` from this process: they stay in
    the page cache, and the next access maps them again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        mapped.madvise(mmap.MADV_DONTNEED)


class CacheDir:
    """One flat directory of cache files, bounded to ``max_bytes`` (least recently used go)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._total: int | None = None  # bytes in the directory, once scanned
        self.counters: dict[str, int] = {}
        self._mapped: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()  # files mapped and still in use

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def read(self, name: str, max_size: int) -> bytes:
        """The bytes of file ``name`` (touching its mtime); raises ``CacheMiss("absent")``."""
        fd, size = self._open(name, max_size)
        try:
            chunks = []
            remaining = size
            while remaining > 0:
                chunk = os.read(fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        except OSError as err:
            raise CacheMiss("absent", err.strerror or "") from err
        finally:
            os.close(fd)

    def map(self, name: str, max_size: int) -> mmap.mmap:
        """File ``name`` mapped read-only (touching its mtime); raises ``CacheMiss`` like ``read``."""
        fd, size = self._open(name, max_size)
        try:
            if size == 0:
                raise CacheMiss("corrupt", "empty")
            mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
            self._mapped.add(mapped)
            return mapped
        except OSError as err:
            raise CacheMiss("absent", err.strerror or "") from err
        finally:
            os.close(fd)

    def release_pages(self) -> None:
        """Release the pages of every file mapped from here that lookups have touched (see the
        module docstring); call once per interval."""
        for mapped in list(self._mapped):
            _release(mapped)

    def _open(self, name: str, max_size: int) -> tuple[int, int]:
        """(fd, size) of regular file ``name``, its mtime touched (recency for eviction)."""
        try:
            fd = os.open(os.path.join(self.path, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            raise CacheMiss("absent", err.strerror or "") from err
        try:
            st = os.fstat(fd)
        except OSError as err:
            os.close(fd)
            raise CacheMiss("absent", err.strerror or "") from err
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_size:
            os.close(fd)
            raise CacheMiss("corrupt", "not a regular file, or above the size cap")
        with contextlib.suppress(OSError):
            os.utime(fd)
        return fd, st.st_size

    def write(self, name: str, data: bytes) -> bool:
        """Replace file ``name`` with ``data`` atomically; False (counted) when that fails."""
        if len(data) > self.max_bytes:
            self.count("too_large")
            return False
        return self.write_from(name, lambda fd: write_all(fd, data))

    def write_from(self, name: str, fill: Callable[[int], int]) -> bool:
        """Replace file ``name`` atomically with what ``fill(fd)`` writes to a new file (it
        returns the size written, and may raise ``OSError`` or ``ValueError`` to give up);
        False (counted) when that fails."""
        temp = ""
        try:
            _make_private_dirs(self.path)
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.path)
            try:
                size = fill(fd)
            finally:
                os.close(fd)
            if size > self.max_bytes:
                raise ValueError(f"{size} bytes above the directory's bound")
            target = os.path.join(self.path, name)
            replaced = _size_of(target)
            os.replace(temp, target)
        except (OSError, ValueError) as err:
            self.count("write_errors")
            log.debug("cannot write %s/%s: %s", self.path, name, err)
            if temp:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            return False
        if self._total is not None:
            self._total += size - replaced
        self._bound(keep=name)
        return True

    def open(self, name: str, max_size: int) -> int:
        """A read-only fd of file ``name`` (touching its mtime); raises ``CacheMiss`` like ``read``."""
        return self._open(name, max_size)[0]

    def remove(self, name: str) -> None:
        with contextlib.suppress(OSError):
            size = _size_of(os.path.join(self.path, name))
            os.unlink(os.path.join(self.path, name))
            if self._total is not None:
                self._total -= size

    def _bound(self, keep: str) -> None:
        if self._total is not None and self._total <= self.max_bytes:
            return
        entries = self._scan()
        self._total = sum(size for _, _, size in entries)
        entries.sort()  # oldest first
        for _mtime, name, size in entries:
            if self._total <= self.max_bytes:
                break
            if name == keep:
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.path, name))
                self._total -= size
                self.count("evicted")

    def _scan(self) -> list[tuple[float, str, int]]:
        """(mtime, name, size) of each regular file; stale temporary files are deleted."""
        entries = []
        now = time.time()
        try:
            listing = list(os.scandir(self.path))
        except OSError:
            return []
        for entry in listing:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if entry.name.startswith(TEMP_PREFIX) and now - st.st_mtime > STALE_TEMP_S:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            entries.append((st.st_mtime, entry.name, st.st_size))
        return entries


def write_all(fd: int, data: Buffer) -> int:
    """Write all of ``data`` to ``fd``; its size."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _make_private_dirs(path: str) -> None:
    """Create ``path`` and any missing parent, each 0700 (``os.makedirs`` gives parents 0777 &
    ~umask)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)


def _size_of(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
