"""Symbolizer stage: kernel symbols from /proc/kallsyms.

In: the path of a kallsyms file (injectable; ``/proc/kallsyms`` on a live host). Out: a
``KallsymsTable`` answering ``lookup(addr) -> (name, module) | None`` by bisection, where
``module`` is "" for the core kernel and e.g. "ext4" for a module symbol (``... [ext4]``).

kallsyms has no sizes: a symbol ends where the next one (of any type) starts, and never
spans more than ``MAX_SYMBOL_SPAN``. Only text symbols (t/T/w/W) name an address; data
symbols only end the text before them. When every address reads as 0 (kptr_restrict, or an
unprivileged reader) the table is ``restricted`` and names nothing.

Storage: the file's bytes stay as one ``bytes`` object; arrays hold each kept symbol's
address, the offset of its name in those bytes and its module index.
"""

from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass

from symbolizer.errors import SymbolizerError, cause_of_os_error

KERNEL_MODULE_PATH = "[kernel.kallsyms]"
MAX_KALLSYMS_SIZE = 256 << 20
MAX_SYMBOL_SPAN = 1 << 21  # no kernel function is 2 MiB long: past that an address is unnamed
_TEXT_TYPES = frozenset(b"tTwW")
_ABSOLUTE_TYPES = frozenset(b"aA")
_LINE = re.compile(rb"^([0-9a-fA-F]+) (\S) ([^\s\[]+)(?:\t\[([^\]\s]+)\])?[ \t]*\r?$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class KernelModuleRange:
    """Lowest and one-past-highest symbol address seen for one module ("" is the core kernel)."""

    name: str
    start: int
    end: int

    @property
    def path(self) -> str:
        return KERNEL_MODULE_PATH if not self.name else f"[{self.name}]"


class KallsymsTable:
    """The symbols of a kallsyms file sorted by address."""

    __slots__ = (
        "_addrs",
        "_is_text",
        "_module_index",
        "_name_lengths",
        "_name_offsets",
        "_raw",
        "modules",
        "restricted",
    )

    def __init__(self, raw: bytes) -> None:
        """Parse ``raw``, the whole text of a kallsyms file; malformed lines are skipped."""
        self._raw = raw
        module_index: dict[bytes, int] = {b"": 0}
        addrs, name_offsets, name_lengths = array("Q"), array("Q"), array("H")
        modules, is_text = array("I"), bytearray()
        for match in _LINE.finditer(raw):
            kind = match.group(2)[0]
            if kind in _ABSOLUTE_TYPES:
                continue
            addrs.append(int(match.group(1), 16) & 0xFFFF_FFFF_FFFF_FFFF)
            name_at = match.start(3)
            name_offsets.append(name_at)
            name_lengths.append(min(match.end(3) - name_at, 0xFFFF))
            module = match.group(4)
            modules.append(0 if module is None else module_index.setdefault(module, len(module_index)))
            is_text.append(kind in _TEXT_TYPES)
        self.restricted = not any(addrs)
        if any(addrs[i] > addrs[i + 1] for i in range(len(addrs) - 1)):
            order = sorted(range(len(addrs)), key=addrs.__getitem__)
            addrs = array("Q", [addrs[i] for i in order])
            name_offsets = array("Q", [name_offsets[i] for i in order])
            name_lengths = array("H", [name_lengths[i] for i in order])
            modules = array("I", [modules[i] for i in order])
            is_text = bytearray(is_text[i] for i in order)
        self._addrs, self._name_offsets, self._name_lengths = addrs, name_offsets, name_lengths
        self._module_index, self._is_text = modules, bytes(is_text)
        self.modules = self._module_ranges([name.decode("utf-8", "replace") for name in module_index])

    def _module_ranges(self, names: list[str]) -> tuple[KernelModuleRange, ...]:
        low = [0] * len(names)
        high = [-1] * len(names)
        for addr, index, text in zip(self._addrs, self._module_index, self._is_text, strict=True):
            if text:
                if high[index] < 0:
                    low[index] = addr
                high[index] = addr  # rows are sorted: the last seen is the highest
        return tuple(KernelModuleRange(name, low[i], high[i] + 1) for i, name in enumerate(names))

    def __len__(self) -> int:
        return len(self._addrs)

    def lookup(self, addr: int) -> tuple[str, KernelModuleRange] | None:
        """The text symbol containing kernel ``addr`` and its module, or None."""
        if self.restricted:
            return None
        index = bisect.bisect_right(self._addrs, addr) - 1
        if index < 0 or not self._is_text[index] or addr - self._addrs[index] >= MAX_SYMBOL_SPAN:
            return None
        offset = self._name_offsets[index]
        name = self._raw[offset : offset + self._name_lengths[index]].decode("utf-8", "replace")
        return name, self.modules[self._module_index[index]]


def load_kallsyms(path: str) -> KallsymsTable:
    """Read and parse the kallsyms file at ``path``; OSError becomes ``SymbolizerError``."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_KALLSYMS_SIZE)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"{path}: {err.strerror}") from err
    return KallsymsTable(raw)
