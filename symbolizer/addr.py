"""Symbolizer stage: the one place that converts between address spaces.

In: a runtime ``addr`` sampled in a process, the ``Mapping`` that contains it, and the ELF
file's PT_LOAD segments. Out: the ``file_offset`` of that byte in the mapped file, and the
``elf_vaddr`` that symbol tables and DWARF use for it.

    file_offset = addr - mapping.start + mapping.file_offset
    elf_vaddr   = file_offset - segment.file_offset + segment.elf_vaddr

where ``segment`` is the PT_LOAD whose file bytes hold ``file_offset``. This is the same for
PIE executables (vaddrs from 0, loaded at a random base), non-PIE executables (vaddrs already
absolute; the difference is 0) and shared libraries, and it needs no load bias: the bias
cancels out through the mapping's file offset, so it also works for binaries whose segments
are mapped at irregular places (prelinked, hugepage-aligned, or -z separate-code layouts).
"""

from __future__ import annotations

from collections.abc import Sequence

from symbolizer.elf import LoadSegment
from symbolizer.model import Mapping


def file_offset_of(addr: int, mapping: Mapping) -> int:
    """Offset in the mapped file of the byte at runtime ``addr`` (which ``mapping`` contains)."""
    return addr - mapping.start + mapping.file_offset


def elf_vaddr_of(file_offset: int, loads: Sequence[LoadSegment]) -> int | None:
    """The ELF virtual address of the file byte at ``file_offset``, or None outside every PT_LOAD.

    Segments may share a file page (e.g. the tail of .text and the head of .rodata); an
    executable segment wins, since sampled addresses are code.
    """
    found: LoadSegment | None = None
    for segment in loads:
        if segment.file_offset <= file_offset < segment.file_offset + segment.filesz:
            if segment.executable:
                return file_offset - segment.file_offset + segment.elf_vaddr
            if found is None:
                found = segment
    if found is None:
        return None
    return file_offset - found.file_offset + found.elf_vaddr


def elf_vaddr_of_addr(addr: int, mapping: Mapping, loads: Sequence[LoadSegment]) -> int | None:
    """Runtime ``addr`` in ``mapping`` straight to its ELF virtual address (None if unmapped in the file)."""
    return elf_vaddr_of(file_offset_of(addr, mapping), loads)
