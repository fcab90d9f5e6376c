"""Symbolizer stage: kernel stacks.

In: kernel stack addresses, leaf first (every one after the leaf a return address). Out: one
``Symbolized`` of kind KERNEL per address, named from kallsyms (see ``symbolizer.kallsyms``)
with ``Module.path`` "[kernel.kallsyms]" or "[modname]", else ``[kernel] 0xADDR`` unnamed.

kallsyms is read lazily, once (through ``symbolizer.kernel_cache`` when a cache directory is
configured); the core kernel's build-id comes from /sys/kernel/notes. A failure to read
kallsyms is remembered in ``failure`` and logged once, never raised; ``load_s`` is the time
the load took.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from symbolizer.elf import parse_build_id
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.kallsyms import KERNEL_MODULE_PATH, KallsymsTable, KernelModuleRange, load_kallsyms
from symbolizer.kernel_cache import KallsymsCache
from symbolizer.model import Frame, FrameKind, Module, Symbolized

log = logging.getLogger(__name__)

MAX_NOTES_SIZE = 1 << 16


class KernelSymbolizer:
    """Names kernel addresses; memoizes per looked-up address (bounded by ``max_results``)."""

    def __init__(
        self, kallsyms_path: str, notes_path: str, max_results: int, cache: KallsymsCache | None = None,
        loaded: KernelSymbolizer | None = None,
    ) -> None:
        """``loaded``: another instance whose kernel symbols (once loaded) this one shares rather
        than loading them again; its memo is not shared."""
        self._kallsyms_path = kallsyms_path
        self._cache = cache
        self.load_s = 0.0
        self._notes_path = notes_path
        self._max_results = max_results
        self._table: KallsymsTable | None = None
        self._loaded = False
        self._build_id = b""
        self._modules: dict[str | None, Module] = {}  # by module name; None: unnamed frames
        self._results: dict[int, tuple[tuple[Frame, ...], Module] | None] = {}
        self.failure: Cause | None = None
        self.hits = 0
        self.misses = 0
        if loaded is not None and loaded._loaded:
            self._table, self._loaded, self._build_id = loaded._table, True, loaded._build_id
            self.failure, self.load_s = loaded.failure, loaded.load_s

    def symbolize(self, addrs: Sequence[int]) -> list[Symbolized]:
        table = self._load()
        return [self._symbolize_addr(table, addr, position > 0) for position, addr in enumerate(addrs)]

    def _symbolize_addr(self, table: KallsymsTable | None, addr: int, is_return: bool) -> Symbolized:
        lookup = addr - 1 if is_return and addr > 0 else addr
        if lookup in self._results:
            self.hits += 1
            named = self._results[lookup]
        else:
            self.misses += 1
            found = table.lookup(lookup) if table is not None else None
            named = None if found is None else ((Frame(function=found[0]),), self._module(found[1]))
            if len(self._results) >= self._max_results:
                self._results.clear()
            self._results[lookup] = named
        if named is None:
            frames = (Frame(function=f"[kernel] 0x{addr:x}"),)
            return Symbolized(addr, FrameKind.KERNEL, self._module(None), frames, False)
        return Symbolized(addr, FrameKind.KERNEL, named[1], named[0], True)

    def _load(self) -> KallsymsTable | None:
        if not self._loaded:
            self._loaded = True
            began = time.perf_counter()
            try:
                self._table = self._cache.load() if self._cache is not None else load_kallsyms(self._kallsyms_path)
            except SymbolizerError as err:
                self.failure = err.cause
                log.warning("cannot read %s (%s): kernel frames stay unnamed", self._kallsyms_path, err)
                return None
            if self._table.restricted:
                log.warning(
                    "%s shows only zero addresses (kptr_restrict or no CAP_SYSLOG): kernel frames "
                    "stay unnamed; run as root or set kernel.kptr_restrict=0",
                    self._kallsyms_path,
                )
            self._build_id = read_kernel_build_id(self._notes_path)
            self.load_s = time.perf_counter() - began
            log.debug("kernel symbols loaded in %.1f ms", self.load_s * 1e3)
        return self._table

    def _module(self, module_range: KernelModuleRange | None) -> Module:
        key = module_range.name if module_range is not None else None
        module = self._modules.get(key)
        if module is None:
            if module_range is None:
                module = Module(KERNEL_MODULE_PATH, self._build_id, 0, 0, 0, has_functions=False)
            else:
                module = Module(
                    path=module_range.path,
                    build_id=b"" if module_range.name else self._build_id,
                    start=module_range.start,
                    end=module_range.end,
                    file_offset=0,
                    has_functions=True,
                )
            self._modules[key] = module
        return module


def read_kernel_build_id(notes_path: str) -> bytes:
    """The running kernel's build-id from /sys/kernel/notes (raw ELF notes), or b""."""
    try:
        with open(notes_path, "rb") as stream:
            notes = stream.read(MAX_NOTES_SIZE)
    except OSError:
        return b""
    return parse_build_id(notes, sys.byteorder == "little")
