"""Symbolizer stage: DWARF file:line and inlined calls for ELF virtual addresses.

In: a ``DwarfFile`` (libdw, see ``symbolizer.libdw``) and ``elf_vaddr``s. Out: per address a
tuple of ``SourceFrame`` innermost first - the innermost inlined function with the line-table
row's file and line, then each caller with the call site (DW_AT_call_file/line) of the frame
inside it, the concrete (out-of-line) function last - or None when no CU covers the address.

Built lazily: a CU is indexed when an address first falls in it (its functions' PC ranges,
sorted), a function when an address first falls in it (its tree of inlined calls, lexical
blocks flattened, each level's ranges sorted for bisection). Results are memoized per address.
``export`` / ``restore`` carry those indexes to another process (``symbolizer.source`` keeps
them on disk by build-id), so it walks no DIE already walked; line rows always come from
libdw's own (C) line-table lookup.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
MAX_TREE_NODES = 1 << 20
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
    stored_trees: dict[str, Any] = field(default_factory=dict)  # restored, encoded; decoded on first use
    built: set[int] = field(default_factory=set)  # functions indexed here (to encode at export)


class DwarfIndex:
    """Answers ``lookup(elf_vaddr)`` for one DWARF file; see the module docstring."""

    def __init__(self, dwarf: DwarfFile) -> None:
        self._dwarf = dwarf
        self._cus: dict[int, _CuIndex] = {}
        self._memo: dict[int, tuple[SourceFrame, ...] | None] = {}
        self._restored: dict[int, StoredCu] = {}
        self.cus_indexed = 0
        self.functions_indexed = 0
        self.dirty = False  # indexed something since ``restore`` / ``export``

    def restore(self, cus: list[StoredCu]) -> None:
        """Take CUs (and their functions' trees) indexed by an earlier process; see ``export``."""
        for stored in cus:
            self._restored[stored[0]] = stored

    def export(self) -> list[StoredCu]:
        """Every CU indexed so far (restored ones included), as JSON-ready lists."""
        out = dict(self._restored)
        for offset, cu in self._cus.items():
            trees = dict(cu.stored_trees)
            trees.update((str(function), _encode(cu.trees[function])) for function in cu.built)
            out[offset] = [offset, cu.comp_dir, list(cu.files), cu.starts, cu.ends, cu.functions, trees]
        self.dirty = False
        return list(out.values())

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
            stored = self._restored.pop(cu_offset, None)
            cu = self._index_cu(cu_offset) if stored is None else self._restore_cu(stored)
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
            stored = cu.stored_trees.get(str(offset))
            node = _decode(stored) if stored is not None and _valid_tree(stored) else None
            if node is None:
                node = self._index_function(cu, offset)
                cu.built.add(offset)
                cu.stored_trees.pop(str(offset), None)
            cu.trees[offset] = node
        chain = [node]
        while node.starts:
            at = bisect.bisect_right(node.starts, elf_vaddr) - 1
            if at < 0 or elf_vaddr >= node.ends[at]:
                break
            node = node.children[at]
            chain.append(node)
        return chain

    def _restore_cu(self, stored: StoredCu) -> _CuIndex | None:
        offset, comp_dir, files, starts, ends, functions, trees = stored
        die = self._dwarf.die(offset)
        if die is None:
            return None
        cu = _CuIndex(die, comp_dir, tuple(files), starts, ends, functions, stored_trees=trees)
        self._cus[offset] = cu
        return cu

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
        self.dirty = True
        return cu

    def _index_function(self, cu: _CuIndex, offset: int) -> _Node:
        dwarf = self._dwarf
        die = dwarf.die(offset)
        root = _Node(dwarf.linkage_name(die) if die is not None else "")
        self.functions_indexed += 1
        self.dirty = True
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


# A stored CU: [offset, comp_dir, files, starts, ends, function offsets, {str(function): tree}];
# a stored tree: its nodes, root first, each [name, call_file, call_line, starts, ends, child
# indexes] where every child index is larger than its parent's (an inlined call with several
# ranges is one node referenced several times; ``symbolizer.source_cache`` checks it all).
StoredCu = list[Any]


def _encode(root: _Node) -> list[list[Any]]:
    index: dict[int, int] = {id(root): 0}
    order = [root]
    for node in order:  # grows while iterated: breadth first, so children come after parents
        for child in node.children:
            if id(child) not in index:
                index[id(child)] = len(order)
                order.append(child)
    return [[n.name, n.call_file, n.call_line, n.starts, n.ends, [index[id(c)] for c in n.children]] for n in order]


def _valid_tree(tree: Any) -> bool:
    """True when a stored tree has the shape ``_encode`` writes (children after parents)."""
    if not isinstance(tree, list) or not 0 < len(tree) <= MAX_TREE_NODES:
        return False
    for at, node in enumerate(tree):
        if not (isinstance(node, list) and len(node) == 6 and isinstance(node[0], str) and isinstance(node[1], str)
                and isinstance(node[2], int) and isinstance(node[3], list) and isinstance(node[4], list)
                and isinstance(node[5], list) and len(node[3]) == len(node[4]) == len(node[5])):
            return False
        if not all(isinstance(x, int) for x in node[3] + node[4]) or node[3] != sorted(node[3]):
            return False
        if not all(isinstance(c, int) and at < c < len(tree) for c in node[5]):
            return False
    return True


def _decode(tree: list[list[Any]]) -> _Node:
    nodes = [_Node(row[0], row[1], row[2], row[3], row[4]) for row in tree]
    for node, row in zip(nodes, tree, strict=True):
        node.children = [nodes[child] for child in row[5]]
    return nodes[0]


def _copy(die: Die) -> Die:
    return Die(die.addr, die.cu, die.abbrev, die.padding)
