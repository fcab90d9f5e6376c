"""Symbolizer stage: the files behind executable mappings, held open while their processes live.

In: a pid and its ``Mapping``s (from the registry). Out: one ``FileEntry`` per mapped file,
keyed by the mapping's ``file_key`` and bounded in number: pinned (an fd of the file, and an
``O_PATH`` fd of the process's root when that is not the host's, for debug-file lookups),
loaded (the parsed binary; the fds then closed) or failed (a ``Cause``, counted in ``failed``).

Files are opened through map_files, else the process root (``symbolizer.files``). A failure
that another process mapping the same file may not hit (gone, permission, I/O, changed) is
transient: retried by the next pin, and dropped by ``forget_unused``, which also closes the fds
of files neither pinned nor used during the previous interval.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from symbolizer.cache import LruCache
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.files import open_mapped_file
from symbolizer.loader import Binary
from symbolizer.model import Mapping

FileKey = tuple[int, int, int]
MAX_FILE_SIZE = 8 << 30
TRANSIENT_CAUSES = frozenset({Cause.GONE, Cause.PERMISSION, Cause.IO_ERROR, Cause.FILE_CHANGED})


class FileEntry:
    """State of one file_key: pinned (fd, and root_fd of a process root other than the
    host's), loaded (binary), or failed (failure)."""

    __slots__ = ("binary", "failure", "fd", "generation", "root_fd")

    def __init__(self, generation: int, fd: int = -1, failure: Cause | None = None, root_fd: int = -1) -> None:
        self.fd = fd
        self.root_fd = root_fd
        self.binary: Binary | None = None
        self.failure = failure
        self.generation = generation


class PinnedFiles:
    """The ``FileEntry`` of every executable file seen, least recently used beyond ``capacity`` closed."""

    def __init__(self, proc_root: str, capacity: int, host_root: str = "/") -> None:
        self._proc_root = proc_root
        self._files: LruCache[FileKey, FileEntry] = LruCache(capacity, self.release)
        self._host_root_id = _dir_identity(host_root)
        self._generation = 0
        self.failed: dict[str, int] = {}

    def count_failure(self, cause: Cause) -> None:
        self.failed[cause.value] = self.failed.get(cause.value, 0) + 1

    @property
    def pinned(self) -> int:
        """Files held open now."""
        return sum(1 for _, entry in self._files.items() if entry.fd >= 0)

    def pin(self, pid: int, mappings: Sequence[Mapping]) -> None:
        """Open, now, every new executable file of live process ``pid``."""
        for mapping in mappings:
            if not mapping.is_exec or not mapping.is_file:
                continue
            entry = self._files.get(mapping.file_key)
            if entry is not None:
                entry.generation = self._generation
                if entry.failure not in TRANSIENT_CAUSES:
                    continue
            self._open(pid, mapping)

    def entry(self, pid: int, mapping: Mapping) -> FileEntry:
        """The entry of the mapping's file, opened now through ``pid`` if never pinned."""
        entry = self._files.get(mapping.file_key)
        if entry is None:
            entry = self._open(pid, mapping)
        entry.generation = self._generation
        return entry

    def _open(self, pid: int, mapping: Mapping) -> FileEntry:
        try:
            fd = open_mapped_file(self._proc_root, pid, mapping, MAX_FILE_SIZE)
        except SymbolizerError as err:
            entry = FileEntry(self._generation, failure=err.cause)
            self.count_failure(err.cause)
        else:
            entry = FileEntry(self._generation, fd=fd, root_fd=self._open_process_root(pid))
        self._files.put(mapping.file_key, entry)
        return entry

    def _open_process_root(self, pid: int) -> int:
        """An O_PATH fd of the root of process ``pid`` when it is not the host's root, else -1."""
        try:
            root_fd = os.open(f"{self._proc_root}/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return -1
        try:
            st = os.fstat(root_fd)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) == self._host_root_id:
            os.close(root_fd)
            return -1
        return root_fd

    @staticmethod
    def release(_key: FileKey, entry: FileEntry) -> None:
        """Close the entry's fds (after its binary was parsed, or when it is evicted)."""
        if entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1
        if entry.root_fd >= 0:
            os.close(entry.root_fd)
            entry.root_fd = -1

    def forget_unused(self) -> None:
        """Close fds of files neither pinned nor used since the previous call; drop transient
        failures so they are retried."""
        for key, entry in self._files.items():
            stale = entry.generation < self._generation
            if (entry.fd >= 0 and stale) or entry.failure in TRANSIENT_CAUSES:
                self.release(key, entry)
                self._files.pop(key)
        self._generation += 1

    def close(self) -> None:
        """Close every pinned fd; parsed binaries stay."""
        for key, entry in self._files.items():
            if entry.fd >= 0:
                self.release(key, entry)
                self._files.pop(key)


def _dir_identity(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)
