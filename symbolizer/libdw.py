"""Symbolizer stage: a thin ctypes binding of elfutils' libdw (Debian ``libdw1``), for DWARF.

In: an fd of an ELF file carrying .debug_info. Out: ``DwarfFile``, whose few methods return
plain Python values (DIE offsets, tags, names, PC ranges, source lines). libdw parses
.debug_aranges / .debug_info / .debug_line (DWARF 2..5, compressed sections) lazily per CU
in C; everything built on top of it lives in ``symbolizer.dwarf``. ``load_libdw`` returns None
when the library is missing: DWARF is then simply not used (frames keep their symbol names).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

DWARF_C_READ = 0
TAG_LEXICAL_BLOCK = 0x0B
TAG_INLINED_SUBROUTINE = 0x1D
TAG_SUBPROGRAM = 0x2E
TAG_NAMESPACE = 0x39
TAG_CLASS = 0x02
TAG_STRUCTURE = 0x13
TAG_UNION = 0x17
AT_NAME = 0x03
AT_COMP_DIR = 0x1B
AT_CALL_FILE = 0x58
AT_CALL_LINE = 0x59
AT_LINKAGE_NAME = 0x6E
AT_MIPS_LINKAGE_NAME = 0x2007
MAX_RANGES_PER_DIE = 4096
MAX_CUS = 1 << 20


class Die(ctypes.Structure):
    """libdw's Dwarf_Die: a value type of four pointers."""

    _fields_ = [("addr", ctypes.c_void_p), ("cu", ctypes.c_void_p), ("abbrev", ctypes.c_void_p),
                ("padding", ctypes.c_long)]


class Attribute(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint), ("form", ctypes.c_uint), ("valp", ctypes.c_void_p),
                ("cu", ctypes.c_void_p)]


_P = ctypes.c_void_p
_DieP = ctypes.POINTER(Die)
_AttrP = ctypes.POINTER(Attribute)
_U64 = ctypes.c_uint64
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "dwarf_begin": (_P, [ctypes.c_int, ctypes.c_int]),
    "dwarf_end": (ctypes.c_int, [_P]),
    "dwarf_addrdie": (_DieP, [_P, _U64, _DieP]),
    "dwarf_offdie": (_DieP, [_P, _U64, _DieP]),
    "dwarf_nextcu": (ctypes.c_int, [_P, _U64, ctypes.POINTER(_U64), ctypes.POINTER(ctypes.c_size_t), _P, _P, _P]),
    "dwarf_dieoffset": (_U64, [_DieP]),
    "dwarf_child": (ctypes.c_int, [_DieP, _DieP]),
    "dwarf_siblingof": (ctypes.c_int, [_DieP, _DieP]),
    "dwarf_tag": (ctypes.c_int, [_DieP]),
    "dwarf_ranges": (ctypes.c_ssize_t, [_DieP, ctypes.c_ssize_t, ctypes.POINTER(_U64), ctypes.POINTER(_U64),
                                        ctypes.POINTER(_U64)]),
    "dwarf_attr": (_AttrP, [_DieP, ctypes.c_uint, _AttrP]),
    "dwarf_attr_integrate": (_AttrP, [_DieP, ctypes.c_uint, _AttrP]),
    "dwarf_formstring": (ctypes.c_char_p, [_AttrP]),
    "dwarf_formudata": (ctypes.c_int, [_AttrP, ctypes.POINTER(_U64)]),
    "dwarf_getsrcfiles": (ctypes.c_int, [_DieP, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_size_t)]),
    "dwarf_filesrc": (ctypes.c_char_p, [_P, ctypes.c_size_t, _P, _P]),
    "dwarf_getsrc_die": (_P, [_DieP, _U64]),
    "dwarf_lineno": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int)]),
    "dwarf_linesrc": (ctypes.c_char_p, [_P, _P, _P]),
    "dwarf_linediscriminator": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint)]),
}


@functools.cache
def load_libdw() -> ctypes.CDLL | None:
    """libdw.so.1 with the signatures used here, or None when it is not installed."""
    for name in ("libdw.so.1", ctypes.util.find_library("dw")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for function, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, function)
            fn.restype = restype
            fn.argtypes = argtypes
        return lib
    return None


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _joined(directory: str, name: str) -> str:
    """``name`` made absolute against the CU's compilation directory, as addr2line prints it."""
    if not name or name.startswith("/") or not directory:
        return name
    return f"{directory.rstrip('/')}/{name}"


class DwarfFile:
    """One ELF file's DWARF, open through libdw. ``close`` frees it (the fd stays the caller's)."""

    def __init__(self, lib: ctypes.CDLL, fd: int) -> None:
        self._lib = lib
        self._dbg = lib.dwarf_begin(fd, DWARF_C_READ)
        if not self._dbg:
            raise ValueError("no DWARF")
        self._die = Die()
        self._attr = Attribute()
        self._u64 = _U64()
        self._files: dict[int, tuple[str, ...]] = {}
        self._cu_ranges: tuple[list[int], list[int], list[int]] | None = None

    def close(self) -> None:
        if self._dbg:
            self._lib.dwarf_end(self._dbg)
            self._dbg = None

    def cu_of(self, elf_vaddr: int) -> int | None:
        """The offset of the CU DIE whose ranges (.debug_aranges, else CU ranges) hold the address."""
        cu = Die()
        if self._lib.dwarf_addrdie(self._dbg, elf_vaddr, ctypes.byref(cu)):
            return int(self._lib.dwarf_dieoffset(ctypes.byref(cu)))
        # No .debug_aranges entry (Go writes none): the CUs' own ranges, indexed once.
        if self._cu_ranges is None:
            self._cu_ranges = self._index_cu_ranges()
        starts, ends, offsets = self._cu_ranges
        at = bisect.bisect_right(starts, elf_vaddr) - 1
        return offsets[at] if at >= 0 and elf_vaddr < ends[at] else None

    def _index_cu_ranges(self) -> tuple[list[int], list[int], list[int]]:
        spans: list[tuple[int, int, int]] = []
        offset, following, header = _U64(0), _U64(), ctypes.c_size_t()
        for _ in range(MAX_CUS):
            if self._lib.dwarf_nextcu(self._dbg, offset.value, ctypes.byref(following), ctypes.byref(header),
                                      None, None, None) != 0:
                break
            cu_offset = offset.value + header.value
            die = self.die(cu_offset)
            if die is not None:
                spans.extend((low, high, cu_offset) for low, high in self.ranges(die))
            offset.value = following.value
        spans.sort()
        return [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]

    def die(self, offset: int) -> Die | None:
        die = Die()
        if not self._lib.dwarf_offdie(self._dbg, offset, ctypes.byref(die)):
            return None
        return die

    def offset(self, die: Die) -> int:
        return int(self._lib.dwarf_dieoffset(ctypes.byref(die)))

    def children(self, die: Die) -> Iterator[tuple[Die, int]]:
        """(child DIE, tag) for each child of ``die``."""
        lib = self._lib
        child = Die()
        if lib.dwarf_child(ctypes.byref(die), ctypes.byref(child)) != 0:
            return
        while True:
            yield child, lib.dwarf_tag(ctypes.byref(child))
            following = Die()
            if lib.dwarf_siblingof(ctypes.byref(child), ctypes.byref(following)) != 0:
                return
            child = following

    def ranges(self, die: Die) -> list[tuple[int, int]]:
        """The [low, high) PC ranges of a DIE (low/high_pc or DW_AT_ranges); [] when none."""
        base, start, end = _U64(), _U64(), _U64()
        out: list[tuple[int, int]] = []
        offset = 0
        ref = ctypes.byref(die)
        while len(out) < MAX_RANGES_PER_DIE:
            offset = self._lib.dwarf_ranges(ref, offset, ctypes.byref(base), ctypes.byref(start), ctypes.byref(end))
            if offset <= 0:
                break
            if end.value > start.value:
                out.append((start.value, end.value))
        return out

    def linkage_name(self, die: Die) -> str:
        """DW_AT_linkage_name (through abstract origins and specifications), else DW_AT_name."""
        lib = self._lib
        ref, attr = ctypes.byref(die), ctypes.byref(self._attr)
        for code in (AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME, AT_NAME):
            if lib.dwarf_attr_integrate(ref, code, attr):
                name = lib.dwarf_formstring(attr)
                if name:
                    return _text(name)
        return ""

    def string(self, die: Die, code: int) -> str:
        """A string attribute of the DIE itself, "" when absent."""
        if not self._lib.dwarf_attr(ctypes.byref(die), code, ctypes.byref(self._attr)):
            return ""
        return _text(self._lib.dwarf_formstring(ctypes.byref(self._attr)))

    def udata(self, die: Die, code: int) -> int:
        """An unsigned attribute of the DIE itself, 0 when absent."""
        if not self._lib.dwarf_attr(ctypes.byref(die), code, ctypes.byref(self._attr)):
            return 0
        if self._lib.dwarf_formudata(ctypes.byref(self._attr), ctypes.byref(self._u64)) != 0:
            return 0
        return int(self._u64.value)

    def file_names(self, cu_offset: int, cu: Die) -> tuple[str, ...]:
        """The CU's line-table file names, indexed as DW_AT_call_file counts them."""
        names = self._files.get(cu_offset)
        if names is None:
            files, count = _P(), ctypes.c_size_t()
            names = ()
            if self._lib.dwarf_getsrcfiles(ctypes.byref(cu), ctypes.byref(files), ctypes.byref(count)) == 0:
                base = self.string(cu, AT_COMP_DIR)
                names = tuple(_joined(base, _text(self._lib.dwarf_filesrc(files, i, None, None)))
                              for i in range(count.value))
            self._files[cu_offset] = names
        return names

    def line(self, cu: Die, comp_dir: str, elf_vaddr: int) -> tuple[str, int, int]:
        """(file, line, discriminator) of the line-table row covering the address; ("", 0, 0)."""
        lib = self._lib
        row = lib.dwarf_getsrc_die(ctypes.byref(cu), elf_vaddr)
        if not row:
            return "", 0, 0
        number, discriminator = ctypes.c_int(), ctypes.c_uint()
        lib.dwarf_lineno(row, ctypes.byref(number))
        if lib.dwarf_linediscriminator(row, ctypes.byref(discriminator)) != 0:
            discriminator.value = 0
        return _joined(comp_dir, _text(lib.dwarf_linesrc(row, None, None))), number.value, discriminator.value
