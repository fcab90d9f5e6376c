"""Symbolizer stage: DWARF file:line and inlined calls for ELF virtual addresses.

In: a ``DwarfFile`` (libdw, see ``symbolizer.libdw``) and ``elf_vaddr``s. Out: per address a
tuple of ``SourceFrame`` innermost first - the innermost inlined function with the line-table
row's file and line, then each caller with the call site (DW_AT_call_file/line) of the frame
inside it, the concrete (out-of-line) function last - or None when no CU covers the address.

Built lazily: a CU is indexed when an address first falls in it (its functions' PC ranges,
sorted), a function when an address first falls in it (its tree of inlined calls, lexical
blocks flattened, each level's ranges sorted for bisection). Results are memoized per address.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from symbolizer.libdw import (
    AT_CALL_FILE,
    AT_CALL_LINE,
    AT_COMP_DIR,
    TAG_CLASS,
    TAG_INLINED_SUBROUTINE,
    TAG_LEXICAL_BLOCK,
    TAG_NAMESPACE,
    TAG_STRUCTURE,
    TAG_SUBPROGRAM,
    TAG_UNION,
    Die,
    DwarfFile,
)

MAX_DEPTH = 64  # of nested lexical blocks and inlined calls walked in one function
MAX_MEMO = 1 << 18
_SCOPES = frozenset((TAG_NAMESPACE, TAG_CLASS, TAG_STRUCTURE, TAG_UNION))


class SourceFrame(NamedTuple):
    """One frame as DWARF names it; ``function`` is the linkage (mangled) name when there is one."""

    function: str
    file: str
    line: int
    discriminator: int = 0


@dataclass(slots=True)
class _Node:
    """A function or an inlined call: its children's ranges sorted by start, for bisection."""

    name: str
    call_file: str = ""
    call_line: int = 0
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)


@dataclass(slots=True)
class _CuIndex:
    die: Die
    comp_dir: str
    files: tuple[str, ...]
    starts: list[int]
    ends: list[int]
    functions: list[int]  # DIE offsets
    trees: dict[int, _Node] = field(default_factory=dict)


class DwarfIndex:
    """Answers ``lookup(elf_vaddr)`` for one DWARF file; see the module docstring."""

    def __init__(self, dwarf: DwarfFile) -> None:
        self._dwarf = dwarf
        self._cus: dict[int, _CuIndex] = {}
        self._memo: dict[int, tuple[SourceFrame, ...] | None] = {}
        self.cus_indexed = 0
        self.functions_indexed = 0

    def close(self) -> None:
        self._dwarf.close()

    def lookup(self, elf_vaddr: int) -> tuple[SourceFrame, ...] | None:
        memo = self._memo
        if elf_vaddr in memo:
            return memo[elf_vaddr]
        frames = self._resolve(elf_vaddr)
        if len(memo) >= MAX_MEMO:
            memo.clear()
        memo[elf_vaddr] = frames
        return frames

    def _resolve(self, elf_vaddr: int) -> tuple[SourceFrame, ...] | None:
        cu_offset = self._dwarf.cu_of(elf_vaddr)
        if cu_offset is None:
            return None
        cu = self._cus.get(cu_offset)
        if cu is None:
            cu = self._index_cu(cu_offset)
            if cu is None:
                return None
        file, line, discriminator = self._dwarf.line(cu.die, cu.comp_dir, elf_vaddr)
        chain = self._chain(cu, elf_vaddr)
        if not chain:
            return (SourceFrame("", file, line, discriminator),)
        frames = [SourceFrame(chain[-1].name, file, line, discriminator)]
        for depth in range(len(chain) - 1, 0, -1):
            inner = chain[depth]
            frames.append(SourceFrame(chain[depth - 1].name, inner.call_file, inner.call_line))
        return tuple(frames)

    def _chain(self, cu: _CuIndex, elf_vaddr: int) -> list[_Node]:
        """The function holding the address, then each inlined call in it, outermost first."""
        at = bisect.bisect_right(cu.starts, elf_vaddr) - 1
        if at < 0 or elf_vaddr >= cu.ends[at]:
            return []
        offset = cu.functions[at]
        node = cu.trees.get(offset)
        if node is None:
            node = self._index_function(cu, offset)
            cu.trees[offset] = node
        chain = [node]
        while node.starts:
            at = bisect.bisect_right(node.starts, elf_vaddr) - 1
            if at < 0 or elf_vaddr >= node.ends[at]:
                break
            node = node.children[at]
            chain.append(node)
        return chain

    def _index_cu(self, cu_offset: int) -> _CuIndex | None:
        dwarf = self._dwarf
        die = dwarf.die(cu_offset)
        if die is None:
            return None
        spans: list[tuple[int, int, int]] = []
        pending = [die]
        while pending:
            parent = pending.pop()
            for child, tag in dwarf.children(parent):
                if tag == TAG_SUBPROGRAM:
                    ranges = dwarf.ranges(child)
                    if ranges:
                        offset = dwarf.offset(child)
                        spans.extend((low, high, offset) for low, high in ranges)
                elif tag in _SCOPES:
                    pending.append(_copy(child))
        spans.sort()
        cu = _CuIndex(die, dwarf.string(die, AT_COMP_DIR), dwarf.file_names(cu_offset, die),
                      [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans])
        self._cus[cu_offset] = cu
        self.cus_indexed += 1
        return cu

    def _index_function(self, cu: _CuIndex, offset: int) -> _Node:
        dwarf = self._dwarf
        die = dwarf.die(offset)
        root = _Node(dwarf.linkage_name(die) if die is not None else "")
        self.functions_indexed += 1
        if die is None:
            return root
        spans: dict[int, list[tuple[int, int, _Node]]] = {id(root): []}
        nodes = {id(root): root}
        pending: list[tuple[Die, _Node, int]] = [(die, root, 0)]
        while pending:
            parent, node, depth = pending.pop()
            for child, tag in dwarf.children(parent):
                if tag == TAG_INLINED_SUBROUTINE and depth < MAX_DEPTH:
                    call_file = dwarf.udata(child, AT_CALL_FILE)
                    inner = _Node(
                        dwarf.linkage_name(child),
                        cu.files[call_file] if call_file < len(cu.files) else "",
                        dwarf.udata(child, AT_CALL_LINE),
                    )
                    nodes[id(inner)] = inner
                    spans[id(inner)] = []
                    spans[id(node)].extend((low, high, inner) for low, high in dwarf.ranges(child))
                    pending.append((_copy(child), inner, depth + 1))
                elif tag == TAG_LEXICAL_BLOCK and depth < MAX_DEPTH:
                    pending.append((_copy(child), node, depth + 1))
        for key, entries in spans.items():
            entries.sort(key=lambda entry: entry[0])
            target = nodes[key]
            target.starts = [entry[0] for entry in entries]
            target.ends = [entry[1] for entry in entries]
            target.children = [entry[2] for entry in entries]
        return root


def _copy(die: Die) -> Die:
    return Die(die.addr, die.cu, die.abbrev, die.padding)
