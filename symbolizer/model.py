"""Symbolizer stage: the plain values that go in (memory mappings) and come out (frames).

Address spaces are named everywhere: ``addr`` is a runtime virtual address in the sampled
process (or the kernel), ``file_offset`` an offset into the mapped file, ``elf_vaddr`` the
address an ELF symbol table uses. Only ``symbolizer.addr`` converts between them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FrameKind(enum.Enum):
    """Where a frame's code lives; exporters color and suffix frames by it."""

    KERNEL = "kernel"
    NATIVE = "native"
    JIT = "jit"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of /proc/PID/maps, as the process saw it."""

    start: int
    end: int
    perms: str
    file_offset: int
    dev_major: int
    dev_minor: int
    inode: int
    path: str  # may be "", "[vdso]", "[heap]", or end in " (deleted)"

    @property
    def is_exec(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    @property
    def file_key(self) -> tuple[int, int, int]:
        """Identity of the mapped file that survives renames, deletion and process exit."""
        return (self.dev_major, self.dev_minor, self.inode)


@dataclass(frozen=True, slots=True)
class Module:
    """The binary (or kernel) behind a frame, as a pprof Mapping describes it."""

    path: str  # the path the process used; "[kernel.kallsyms]" for the kernel
    build_id: bytes  # GNU build-id, b"" when there is none
    start: int  # runtime range and file offset of the mapping that holds the frame
    end: int
    file_offset: int
    has_functions: bool = False


@dataclass(frozen=True, slots=True)
class Frame:
    """One function at one address. An inlined call is a Frame of its own."""

    function: str  # demangled name, or "module+0xOFFSET" / "[unknown]" when not named
    system_name: str = ""  # the mangled (linker) name when it differs
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class Symbolized:
    """A sampled address with what is known of it. ``frames`` is never empty."""

    addr: int  # runtime address as sampled (a return address for all but the leaf)
    kind: FrameKind
    module: Module | None
    frames: tuple[Frame, ...]  # innermost (inlined) first, the outermost function last
    named: bool  # False when frames[0] is a "module+0xOFFSET" placeholder
