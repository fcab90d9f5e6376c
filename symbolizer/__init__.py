"""Symbolizer stage facade: runtime addresses in, named frames out.

In: for user stacks, a pid, that process's ``Mapping``s (from the registry) and the sampled
addresses, leaf first; for kernel stacks, the addresses alone. Out: one ``Symbolized`` per
address, in order, never dropped and never raised for: a frame the symbolizer cannot name is
``module+0xFILE_OFFSET``, ``[unknown]`` (no code there: in no mapping or in data; ``module``
is None), ``[jit] 0xADDR`` (anonymous code no perf map names, see ``symbolizer.perfmap``) or
``[kernel] 0xADDR``; the cause is counted in ``Symbolizer.stats``.

Life of a binary: ``pin_process`` opens each new executable file-backed mapping's file while
the process lives (``symbolizer.pins``); the first ``symbolize_user`` needing it parses its
headers and loads its symbol table once (``symbolizer.loader``: shared by build-id, read from
the disk cache under ``cache_dir`` when there, else parsed - a binary without .symtab
completed from its debug file, looked up in the process's root, then on the host, under
``debug_roots``) and closes the fds. Names are memoized per (file_key, file offset), shared
by every process mapping the file, and whole ``Symbolized`` values per (pid, address) until
the pid's mappings object changes or ``forget_unused`` runs: a repeated stack costs one dict
lookup per frame. Not thread-safe: one caller.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from symbolizer.addr import elf_vaddr_of, file_offset_of
from symbolizer.cache import TableKey, table_key
from symbolizer.debuginfo import DebugLocator
from symbolizer.debuginfod import BackgroundFetcher, Debuginfod
from symbolizer.diskcache import CacheDir
from symbolizer.elf import ElfInfo, read_elf_info
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.files import DELETED_SUFFIX
from symbolizer.kernel import KernelSymbolizer
from symbolizer.kernel_cache import KallsymsCache
from symbolizer.loader import Binary, TableLoader
from symbolizer.model import Frame, FrameKind, Mapping, Module, Symbolized
from symbolizer.perfmap import PerfMaps
from symbolizer.pins import FileEntry, FileKey, PinnedFiles
from symbolizer.source import SourceLines, StoredSource, name_source_frames, open_dwarf
from symbolizer.source_cache import SourceDiskCache
from symbolizer.table_cache import SymtabDiskCache

__all__ = [
    "Cause",
    "Frame",
    "FrameKind",
    "Mapping",
    "Module",
    "Symbolized",
    "Symbolizer",
    "SymbolizerError",
    "SymbolizerStats",
]

log = logging.getLogger(__name__)

MAX_RESULTS = 1 << 18  # per memo: (file_key, offset) -> frames, and (pid, addr) -> Symbolized
MAX_PID_INDEXES = 4096
UNKNOWN_FRAMES = (Frame(function="[unknown]"),)


def _not_code(addr: int) -> Symbolized:
    """An address where no code is: in no mapping, or in data (heap, stack, a file's data,
    anonymous memory that is neither executable nor a JIT's)."""
    return Symbolized(addr, FrameKind.UNKNOWN, None, UNKNOWN_FRAMES, False)
HOST_ROOT = "/"
DEFAULT_MAX_CACHE_BYTES = 256 << 20
MAX_KERNEL_CACHE_BYTES = 1 << 30  # one file, replaced when the boot or the modules change


@dataclass(frozen=True, slots=True)
class SymbolizerStats:
    """Counters since the Symbolizer was made.

    ``binaries_loaded``: symbol tables loaded, parsed or from the disk cache (a build-id seen
    again is not loaded again).
    ``binaries_failed``: failures by ``Cause`` value (one per attempt, not per frame).
    ``pinned_files``: fds held open now. ``cache_hits`` / ``cache_misses``: per-address result
    memo (user and kernel). ``tables_shared``: loads answered by a table already parsed for
    the same build-id (or file identity) under another file_key. ``debug_files``: tables
    completed from separate debug information, by source ("build_id", "debuglink",
    "minidebuginfo"). ``debug_failed``: debug-file candidates rejected, by ``Cause`` value
    (a candidate that does not exist is not counted). ``disk_cache``: persistent cache events
    ("kallsyms_hits", "kallsyms_absent" / "_stale" / "_corrupt", "kallsyms_writes", the same
    with "symtab_", "evicted", "write_errors", ...). ``kernel_load_s``: time the kernel
    symbols took to load. ``dwarf_failed``: binaries whose DWARF was refused before libdw saw
    it (``symbolizer.source.check_dwarf_sections``), by ``Cause`` value.
    """

    binaries_loaded: int
    binaries_failed: dict[str, int]
    pinned_files: int
    cache_hits: int
    cache_misses: int
    tables_shared: int = 0
    debug_files: dict[str, int] = field(default_factory=dict)
    debug_failed: dict[str, int] = field(default_factory=dict)
    disk_cache: dict[str, int] = field(default_factory=dict)
    kernel_load_s: float = 0.0
    dwarf_failed: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _PidIndex:
    """One process's mappings sorted by start, for bisection; modules built once each."""

    mappings: Sequence[Mapping]  # the caller's object, compared by identity
    starts: list[int]
    ordered: list[Mapping]
    modules: dict[int, Module] = field(default_factory=dict)  # by position << 1 | has a binary
    memo: dict[int, Symbolized] = field(default_factory=dict)  # by addr << 1 | is_return, this interval
    kept: dict[int, Symbolized] = field(default_factory=dict)  # the last interval's, moved up when looked up


class Symbolizer:
    """Names user and kernel stack addresses. See the module docstring for the life cycle."""

    def __init__(
        self,
        kallsyms_path: str = "/proc/kallsyms",
        proc_root: str = "/proc",
        max_binaries: int = 256,
        kernel_notes_path: str = "/sys/kernel/notes",
        *,
        debug_roots: Sequence[str] = ("/usr/lib/debug",),
        cache_dir: str | None = None,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
        debuginfod: Debuginfod | None = None,
        kernel_from: Symbolizer | None = None,
    ) -> None:
        """``cache_dir``: where parsed kernel and binary symbol tables persist across runs
        (None: nowhere); created 0700; ``max_cache_bytes`` bounds the binaries' part.
        ``debuginfod``: where debug files missing here are fetched from, on a background
        thread; a file that arrives serves binaries loaded after it (its cache directory is
        searched as one more debug root). ``kernel_from``: a Symbolizer being replaced (to
        drop every cache) whose kernel symbols, once loaded, are taken over rather than
        loaded again."""
        self._fetcher = BackgroundFetcher(debuginfod) if debuginfod is not None and debuginfod.urls else None
        if debuginfod is not None:
            debug_roots = (*debug_roots, debuginfod.cache_dir)
        proc_root = proc_root.rstrip("/") or "/"
        self._cache_dirs: list[CacheDir] = []
        kernel_cache, table_cache = None, None
        if cache_dir is not None:
            self._cache_dirs = [
                CacheDir(os.path.join(cache_dir, "kernel"), MAX_KERNEL_CACHE_BYTES),
                CacheDir(os.path.join(cache_dir, "symtab"), max_cache_bytes),
            ]
            kernel_cache = KallsymsCache(self._cache_dirs[0], kallsyms_path, proc_root)
            table_cache = SymtabDiskCache(self._cache_dirs[1])
            self._cache_dirs.append(CacheDir(os.path.join(cache_dir, "dwarf"), max_cache_bytes))
        self._source_disk = SourceDiskCache(self._cache_dirs[2]) if cache_dir is not None else None
        self._sources: dict[TableKey, SourceLines | None] = {}
        self._source_build_ids: dict[TableKey, bytes] = {}
        self._max_binaries = max_binaries
        self._dwarf_failed: dict[str, int] = {}
        self._pins = PinnedFiles(proc_root, max_binaries, HOST_ROOT)
        self._perf_maps = PerfMaps(proc_root)
        self._loader = TableLoader(max_binaries, DebugLocator(debug_roots, HOST_ROOT), table_cache)
        self._results: dict[tuple[FileKey, int], tuple[Frame, ...] | None] = {}
        self._pids: dict[int, _PidIndex] = {}
        self._memo_size = 0  # entries in all _PidIndex.memo together
        self._kernel: KernelSymbolizer = KernelSymbolizer(
            kallsyms_path, kernel_notes_path, MAX_RESULTS, kernel_cache,
            kernel_from._kernel if kernel_from is not None else None)
        self._loaded = 0
        self._hits = 0
        self._misses = 0
        self._misses_seen = 0  # at the last release_when_idle

    # ----- pinning -------------------------------------------------------------------------

    def pin_process(self, pid: int, mappings: Sequence[Mapping]) -> None:
        """Open, now, every new executable file of live process ``pid`` so it can be read later."""
        self._pins.pin(pid, mappings)

    def forget_unused(self) -> None:
        """Close fds pinned for files not pinned or used since the previous call; drop transient
        failures so they are retried; write new DWARF answers to the disk cache and close the
        DWARF (see ``symbolizer.source.DwarfHandle``); release the pages of mapped cache files
        lookups touched. Call once per interval."""
        self._pins.forget_unused()
        self._age_pid_indexes()
        self._release()
        self._perf_maps.forget()

    def release_when_idle(self) -> None:
        """Call after each drain. A binary's DWARF that this drain did not need is closed (its
        new answers and index written first), and when the drain named anything new, the
        mapped cache pages its lookups touched are released. New addresses come in bursts (new
        processes, the drain after an interval's cut), so DWARF stays resident for about a
        burst, not for the rest of the interval; the next new address opens it again."""
        for key, lines in self._sources.items():
            if lines is None:
                continue
            if lines.used:
                lines.used = False
            elif lines.is_open:
                self._flush_source(key, lines)
                lines.release()
        misses = self._misses + self._kernel.misses
        if misses != self._misses_seen:  # lookups ran: ~17 pages a bisection, 64 KiB mapped around each
            self._misses_seen = misses
            for cache in self._cache_dirs:
                cache.release_pages()

    def _release(self) -> None:
        self._flush_sources()
        for lines in self._sources.values():
            if lines is not None:
                lines.release()
        for cache in self._cache_dirs:
            cache.release_pages()

    def _drop_pid_indexes(self) -> None:
        self._pids.clear()
        self._memo_size = 0

    def _age_pid_indexes(self) -> None:
        """End an interval: a process not looked up in it loses its index; one that was keeps
        the answers that cannot change while its maps stay (named frames, addresses outside
        code), so a live process's steady stacks are not looked up again each interval and
        stay the same objects (the profile builder caches by identity). JIT names (code is
        recycled) and unnamed frames (a binary that could not be read may be readable now)
        are looked up again."""
        jit = FrameKind.JIT
        for pid, index in list(self._pids.items()):
            if not index.memo:
                del self._pids[pid]
                continue
            index.kept = {k: s for k, s in index.memo.items() if s.kind is not jit and (s.named or s.module is None)}
            index.memo = {}
        self._memo_size = 0

    def close(self) -> None:
        """Close every pinned fd and DWARF file (at shutdown, or before a replacement). Parsed
        symbol tables stay; files not yet parsed will be reopened through proc_root if needed,
        which fails once their process has exited."""
        self._pins.close()
        self._close_sources()
        if self._fetcher is not None:
            self._fetcher.close()

    # ----- user stacks ---------------------------------------------------------------------

    def symbolize_user(self, pid: int, mappings: Sequence[Mapping], addrs: Sequence[int]) -> list[Symbolized]:
        """One ``Symbolized`` per address of a user stack (leaf first, runtime addresses)."""
        index = self._index(pid, mappings)
        memo = index.memo
        kept = index.kept
        out = []
        for position, addr in enumerate(addrs):
            key = addr << 1 | (position > 0)
            symbolized = memo.get(key)
            if symbolized is None:
                symbolized = kept.get(key) if kept else None
                if symbolized is None:
                    symbolized = self._symbolize_addr(pid, index, addr, position > 0)
                else:
                    self._hits += 1
                if self._memo_size >= MAX_RESULTS:
                    for other in self._pids.values():
                        other.memo.clear()
                        other.kept.clear()
                    self._memo_size = 0
                memo[key] = symbolized
                self._memo_size += 1
            else:
                self._hits += 1
            out.append(symbolized)
        return out

    def _index(self, pid: int, mappings: Sequence[Mapping]) -> _PidIndex:
        index = self._pids.get(pid)
        if index is None or index.mappings is not mappings:
            ordered = sorted(mappings, key=lambda m: m.start)
            index = _PidIndex(mappings, [m.start for m in ordered], ordered)
            if len(self._pids) >= MAX_PID_INDEXES:
                self._drop_pid_indexes()
            elif pid in self._pids:
                self._memo_size -= len(self._pids[pid].memo)
            self._pids[pid] = index
        return index

    def _symbolize_addr(self, pid: int, index: _PidIndex, addr: int, is_return: bool) -> Symbolized:
        lookup = addr - 1 if is_return and addr > 0 else addr
        position = bisect.bisect_right(index.starts, lookup) - 1
        mapping = index.ordered[position] if position >= 0 else None
        if mapping is None or lookup >= mapping.end:
            return _not_code(addr)
        if not mapping.is_file:
            return self._symbolize_special(pid, index, position, addr, lookup)
        if not mapping.is_exec:
            return _not_code(addr)  # a file's data: what a broken frame chain reads as a return address
        entry = self._entry(pid, mapping)
        binary = entry.binary if entry is not None else None
        module = self._module(index, position, binary)
        if binary is None:
            return Symbolized(addr, FrameKind.NATIVE, module, _placeholder(mapping, addr), False)
        offset = file_offset_of(lookup, mapping)
        key = (mapping.file_key, offset)
        if key in self._results:
            self._hits += 1
            frames = self._results[key]
        else:
            self._misses += 1
            frames = _name_frames(binary, offset)
            if len(self._results) >= MAX_RESULTS:
                self._results.clear()
            self._results[key] = frames
        if frames is None:
            return Symbolized(addr, FrameKind.NATIVE, module, _placeholder(mapping, addr), False)
        return Symbolized(addr, FrameKind.NATIVE, module, frames, True)

    def _symbolize_special(self, pid: int, index: _PidIndex, position: int, addr: int, lookup: int) -> Symbolized:
        mapping = index.ordered[position]
        module = self._module(index, position, None)
        if mapping.path in ("[vdso]", "[vsyscall]"):
            frames = (Frame(function=f"{mapping.path}+0x{addr - mapping.start:x}"),)
            return Symbolized(addr, FrameKind.NATIVE, module, frames, False)
        if mapping.path == "[heap]" or mapping.path.startswith("[stack"):
            return _not_code(addr)
        name = self._perf_maps.lookup(pid, lookup)
        if name is not None:
            return Symbolized(addr, FrameKind.JIT, module, (Frame(function=name),), True)
        if mapping.is_exec or self._perf_maps.has_map(pid):  # a JIT may flip its pages to rw- meanwhile
            return Symbolized(addr, FrameKind.JIT, module, (Frame(function=f"[jit] 0x{addr:x}"),), False)
        return _not_code(addr)

    def _module(self, index: _PidIndex, position: int, binary: Binary | None) -> Module:
        mapping = index.ordered[position]
        key = position << 1 | (binary is not None)
        module = index.modules.get(key)
        if module is None:
            module = Module(
                path=mapping.path,
                build_id=binary.build_id if binary is not None else b"",
                start=mapping.start,
                end=mapping.end,
                file_offset=mapping.file_offset,
                has_functions=binary is not None and len(binary.table) > 0,
            )
            index.modules[key] = module
        return module

    def _entry(self, pid: int, mapping: Mapping) -> FileEntry:
        """The loaded (or failed) entry for the mapping's file, opening and parsing on first use."""
        entry = self._pins.entry(pid, mapping)
        if entry.fd >= 0:
            self._load(mapping, entry)
        return entry

    def _load(self, mapping: Mapping, entry: FileEntry) -> None:
        try:
            info = read_elf_info(entry.fd)
            loaded = self._loader.load(entry.fd, info, mapping.path, entry.root_fd)
            if loaded.fresh:
                if len(loaded.table) == 0:
                    self._count_failure(Cause.NO_SYMBOLS)
                else:
                    self._loaded += 1
            entry.binary = Binary(info.build_id, info.loads, loaded.table,
                                  self._source_lines(entry.fd, info, mapping.path, entry.root_fd))
        except SymbolizerError as err:
            entry.failure = err.cause
            self._count_failure(err.cause)
        except Exception:  # a bug must cost one binary its names, not the interval
            log.exception("symbolizer bug while reading %s; its frames stay unnamed", mapping.path)
            entry.failure = Cause.INTERNAL
            self._count_failure(Cause.INTERNAL)
        finally:
            self._pins.release(mapping.file_key, entry)

    def _source_lines(self, fd: int, info: ElfInfo, path: str, root_fd: int) -> SourceLines | None:
        """The binary's DWARF answers, shared per build-id (else file identity); None without DWARF."""
        key = table_key(info.build_id, info.identity)
        if key in self._sources:
            return self._sources[key]
        cached = self._source_disk.read(info.build_id) if self._source_disk is not None else StoredSource()
        try:
            plain = self._cache_dirs[2] if self._cache_dirs else None
            dwarf = open_dwarf(fd, info, path, root_fd, self._loader.locator, plain=plain)
        except SymbolizerError as err:  # hostile DWARF: the symbol table still names the binary
            self._dwarf_failed[err.cause.value] = self._dwarf_failed.get(err.cause.value, 0) + 1
            dwarf = None
        if dwarf is None and not cached.answers and self._fetcher is not None and info.build_id:
            self._fetcher.request(info.build_id)
        disk = self._source_disk
        reader = (lambda: disk.read_index(info.build_id)) if disk is not None else None
        lines = SourceLines(cached, lambda: dwarf, reader) if cached.answers or dwarf is not None else None
        if len(self._sources) >= self._max_binaries:
            self._close_sources()
            self._sources.clear()
        self._sources[key] = lines
        if lines is not None:
            self._source_build_ids[key] = info.build_id
        return lines

    def _close_sources(self) -> None:
        self._flush_sources()
        for lines in self._sources.values():
            if lines is not None:
                lines.close()

    def _flush_sources(self) -> None:
        """Write the DWARF answers found since the last flush to the disk cache."""
        for key, lines in self._sources.items():
            if lines is not None:
                self._flush_source(key, lines)

    def _flush_source(self, key: TableKey, lines: SourceLines) -> None:
        stored = lines.stored() if self._source_disk is not None else None
        if self._source_disk is not None and stored is not None:
            self._source_disk.write(self._source_build_ids.get(key, b""), *stored)

    def _count_failure(self, cause: Cause) -> None:
        self._pins.count_failure(cause)

    # ----- kernel stacks -------------------------------------------------------------------

    def symbolize_kernel(self, addrs: Sequence[int]) -> list[Symbolized]:
        """One ``Symbolized`` (kind KERNEL) per address of a kernel stack, leaf first."""
        return self._kernel.symbolize(addrs)

    # ----- stats ---------------------------------------------------------------------------

    @property
    def stats(self) -> SymbolizerStats:
        failed = dict(self._pins.failed)
        if self._kernel.failure is not None:
            failed[self._kernel.failure.value] = failed.get(self._kernel.failure.value, 0) + 1
        return SymbolizerStats(
            binaries_loaded=self._loaded,
            binaries_failed=failed,
            pinned_files=self._pins.pinned,
            cache_hits=self._hits + self._kernel.hits,
            cache_misses=self._misses + self._kernel.misses,
            tables_shared=self._loader.tables.hits,
            debug_files=dict(self._loader.debug_files),
            debug_failed=dict(self._loader.locator.failures),
            disk_cache=_merged(cache.counters for cache in self._cache_dirs),
            kernel_load_s=self._kernel.load_s,
            dwarf_failed=dict(self._dwarf_failed),
        )


def _merged(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for counter in counters:
        for name, count in counter.items():
            out[name] = out.get(name, 0) + count
    return out


def _name_frames(binary: Binary, file_offset: int) -> tuple[Frame, ...] | None:
    elf_vaddr = elf_vaddr_of(file_offset, binary.loads)
    if elf_vaddr is None:
        return None
    source = binary.lines.lookup(elf_vaddr) if binary.lines is not None else None
    named = name_source_frames(source, binary.table, elf_vaddr, prefer_symbol=True)
    if named is None:
        return None
    return tuple(
        Frame(function=f.function or "[unknown]", system_name=f.system_name if f.system_name != f.function else "",
              file=f.file, line=f.line)
        for f in named
    )


def _placeholder(mapping: Mapping, addr: int) -> tuple[Frame, ...]:
    basename = os.path.basename(mapping.path.removesuffix(DELETED_SUFFIX))
    return (Frame(function=f"{basename}+0x{file_offset_of(addr, mapping):x}"),)
