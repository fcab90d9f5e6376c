"""Symbolizer stage: kernel symbols from /proc/kallsyms.

In: the path of a kallsyms file (injectable; ``/proc/kallsyms`` on a live host). Out: a
``KallsymsTable`` answering ``lookup(addr) -> (name, module) | None`` by bisection, where
``module`` is "" for the core kernel and e.g. "ext4" for a module symbol (``... [ext4]``).

kallsyms has no sizes: a symbol ends where the next one (of any type) starts, and never
spans more than ``MAX_SYMBOL_SPAN``. Only text symbols (t/T/w/W) name an address; data
symbols only end the text before them; absolute ones (a/A) are dropped. When every address
reads as 0 (kptr_restrict, or an unprivileged reader) the table is ``restricted`` and names
nothing. Parsing is in ``symbolizer.kallsyms_parse``; the table keeps its columns (address,
name-offset and module-index ``array``s, one names blob, a text flag byte each), which
``symbolizer.kernel_cache`` also stores on disk.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from itertools import accumulate, islice

from symbolizer.errors import SymbolizerError, cause_of_os_error
from symbolizer.kallsyms_parse import KallsymsColumns, parse_columns

KERNEL_MODULE_PATH = "[kernel.kallsyms]"
MAX_KALLSYMS_SIZE = 256 << 20
MAX_SYMBOL_SPAN = 1 << 21  # no kernel function is 2 MiB long: past that an address is unnamed


@dataclass(frozen=True, slots=True)
class KernelModuleRange:
    """Lowest and one-past-highest text symbol address of one module ("" is the core kernel)."""

    name: str
    start: int
    end: int

    @property
    def path(self) -> str:
        return KERNEL_MODULE_PATH if not self.name else f"[{self.name}]"


class KallsymsTable:
    """The symbols of a kallsyms file sorted by address."""

    __slots__ = ("columns", "modules", "restricted")

    def __init__(self, columns: KallsymsColumns) -> None:
        self.columns = columns
        self.modules = tuple(
            KernelModuleRange(name, start, end)
            for name, start, end in zip(columns.module_names, columns.module_starts, columns.module_ends, strict=True)
        )
        # Sorted: every address is 0 when the highest is (reading it touches one page, not all).
        self.restricted = not columns.addrs or columns.addrs[-1] == 0

    def __len__(self) -> int:
        return len(self.columns.addrs)

    def lookup(self, addr: int) -> tuple[str, KernelModuleRange] | None:
        """The text symbol containing kernel ``addr`` and its module, or None."""
        if self.restricted:
            return None
        columns = self.columns
        index = bisect.bisect_right(columns.addrs, addr) - 1
        if index < 0 or not columns.is_text[index] or addr - columns.addrs[index] >= MAX_SYMBOL_SPAN:
            return None
        module = columns.module_index[index]
        if module >= len(self.modules):  # only a damaged cache file could hold such an index
            return None
        name = columns.names[columns.name_offsets[index] : columns.name_offsets[index + 1]]
        return str(name, "utf-8", "replace"), self.modules[module]

    def keep_modules(self, names: set[str]) -> KallsymsTable:
        """A table naming only the core kernel's symbols and those of the modules in ``names``:
        the others stay as unnamed boundaries, so an address in them is not given to the text
        symbol before them."""
        columns = self.columns
        kept = [i for i, name in enumerate(columns.module_names) if not name or name in names]
        if len(kept) == len(columns.module_names):
            return self
        renumber = [0] * len(columns.module_names)
        for new, old in enumerate(kept):
            renumber[old] = new
        keep = [int(not name or name in names) for name in columns.module_names]
        mask = bytes(map(keep.__getitem__, columns.module_index))
        # Symbols before the first forgotten one are copied whole (usually the core kernel's).
        head = mask.find(0)
        offsets, tail = columns.name_offsets, mask[head:]
        names_kept = [
            columns.names[start:end] if kept_symbol else b""
            for start, end, kept_symbol in zip(
                islice(offsets, head, None), islice(offsets, head + 1, None), tail, strict=False
            )
        ]
        head_end = offsets[head]
        return KallsymsTable(
            KallsymsColumns(
                addrs=columns.addrs,
                is_text=bytes(columns.is_text[:head]) + bytes(map(min, columns.is_text[head:], tail)),
                names=bytes(columns.names[:head_end]) + b"".join(names_kept),
                name_offsets=array("Q", offsets[: head + 1])
                + array("Q", map(head_end.__add__, accumulate(map(len, names_kept)))),
                module_index=array("I", map(renumber.__getitem__, columns.module_index)),
                module_names=[columns.module_names[old] for old in kept],
                module_starts=[columns.module_starts[old] for old in kept],
                module_ends=[columns.module_ends[old] for old in kept],
            )
        )


def parse_kallsyms(raw: bytes) -> KallsymsTable:
    """Parse ``raw``, the whole text of a kallsyms file; malformed lines are skipped."""
    return KallsymsTable(parse_columns(raw))


def read_kallsyms(path: str) -> bytes:
    """The text of the kallsyms file at ``path``; OSError becomes ``SymbolizerError``."""
    try:
        with open(path, "rb") as stream:
            return stream.read(MAX_KALLSYMS_SIZE)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"{path}: {err.strerror}") from err


def load_kallsyms(path: str) -> KallsymsTable:
    """Read and parse the kallsyms file at ``path``."""
    return parse_kallsyms(read_kallsyms(path))
