"""Symbolizer stage: why a binary's frames lack names or lines, and what would fix it.

In: the path a process mapped (and the process's root, for containers), the debug roots.
Out: a ``Diagnosis`` - what the file offers (.symtab, DWARF, a debug file, .gopclntab, a
build-id) and, when something is missing, the cause and a fix in one line each. Reads only
headers (``symbolizer.elf``) and looks for debug files as the symbolizer does
(``symbolizer.debuginfo``); nothing is parsed in full.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from symbolizer.debuginfo import DebugLocator
from symbolizer.elf import read_elf_info
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.files import DELETED_SUFFIX, open_beneath
from symbolizer.libdw import load_libdw

MAX_FILE_SIZE = 4 << 30
JIT_FIX = ("start the runtime with a perf map: node --perf-basic-prof, java -XX:+UnlockDiagnosticVMOptions "
           "-XX:+DumpPerfMapAtExit or perf-map-agent, python3.12 -X perf")
DEBUG_FIX = ("install its debug symbols (Debian: the -dbgsym package from the debian-debug archive, or -dbg), "
             "or set DEBUGINFOD_URLS=https://debuginfod.debian.net")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    has_symbols: bool  # .symtab (own or debug file), or .gopclntab
    has_lines: bool  # DWARF in the file or its debug file
    build_id: bytes
    cause: str  # "" when nothing is missing
    fix: str


def diagnose_jit(has_perf_map: bool) -> Diagnosis:
    if has_perf_map:
        return Diagnosis(True, False, b"", "JIT code the perf map does not cover (written later, or freed)",
                         "none needed for new code; the map is re-read as it grows")
    return Diagnosis(False, False, b"", "JIT code without a perf map (/tmp/perf-PID.map)", JIT_FIX)


def diagnose_binary(path: str, root: str = "/", debug_roots: Sequence[str] = ("/usr/lib/debug",)) -> Diagnosis:
    """What ``path`` (seen from ``root``) offers for names and lines; see the module docstring."""
    clean = path.removesuffix(DELETED_SUFFIX)
    try:
        fd = open_beneath(root, clean, MAX_FILE_SIZE)
    except SymbolizerError as err:
        if path.endswith(DELETED_SUFFIX) or err.cause is Cause.GONE:
            return Diagnosis(False, False, b"", "file not reachable by its path (deleted or replaced since the "
                             "process mapped it, or a memfd)",
                             "restart the process, or keep hostflame running before it starts (files are pinned "
                             "when a process is first sampled)")
        if err.cause is Cause.PERMISSION:
            return Diagnosis(False, False, b"", "unreadable (permission)",
                             "run hostflame as root, or grant CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE")
        return Diagnosis(False, False, b"", f"unreadable ({err.cause.value})", "check the file")
    try:
        try:
            info = read_elf_info(fd)
        except SymbolizerError as err:
            if "no ELF magic" in str(err):
                return Diagnosis(False, False, b"", "not code (a data file): a frame-pointer chain strayed into it",
                                 "rebuild the caller with -fno-omit-frame-pointer")
            return Diagnosis(False, False, b"", f"broken or hostile ELF ({err})", "none: the file is not usable ELF")
        debug = DebugLocator(debug_roots).find(fd, info, clean, -1) if not info.dwarf_sections else None
        if debug is not None:
            has_symbols = True
            has_lines = bool(debug.info.dwarf_sections)
            debug.close()
        else:
            has_symbols = info.has_symtab or info.gopclntab is not None
            has_lines = bool(info.dwarf_sections)
    finally:
        os.close(fd)
    if has_lines and load_libdw() is None:
        return Diagnosis(has_symbols, False, info.build_id, "DWARF present but libdw is not installed",
                         "apt-get install libdw1")
    if has_symbols and has_lines:
        return Diagnosis(True, True, info.build_id, "", "")
    if has_symbols:
        return Diagnosis(True, False, info.build_id, "no DWARF line information (stripped of -g)", DEBUG_FIX)
    return Diagnosis(False, False, info.build_id, "stripped: no .symtab, no DWARF, no debug file found", DEBUG_FIX)
