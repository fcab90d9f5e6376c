"""Builds the symbolizer's test binaries with gcc at test time (never committed).

From tests/fixtures/c/symbolizer_{target,lib}.c: a shared library, and the target program as
PIE, non-PIE, PIE with -rdynamic (and a --strip-all copy of it: only .dynsym left), and PIE
without a build-id. All keep frame pointers; functions are neither reordered nor padded, so
the "call as the last instruction" case stays adjacent to the next function.

``build_debug_variants`` derives separate-debug-info layouts of the PIE: its debug file
(objcopy --only-keep-debug), a stripped copy, one with a .gnu_debuglink, and one carrying
MiniDebugInfo (.gnu_debugdata, xz).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

C_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "c"
CFLAGS = ("-O1", "-g", "-fno-omit-frame-pointer", "-fno-reorder-functions", "-falign-functions=1")
LIB_NAME = "hfsym"
TOOLS = ("gcc", "strip", "nm", "readelf", "objdump")


@dataclass(frozen=True)
class Binaries:
    lib: Path
    pie: Path
    nopie: Path
    rdynamic: Path  # PIE, exports its functions to .dynsym, unstripped
    stripped: Path  # `strip --strip-all` of rdynamic
    no_build_id: Path


def _gcc(*args: str | Path) -> None:
    subprocess.run(["gcc", *CFLAGS, *(str(a) for a in args)], check=True)


def build_binaries(out: Path) -> Binaries:
    """Compile every variant into ``out``."""
    lib = out / f"lib{LIB_NAME}.so"
    _gcc("-fPIC", "-shared", "-Wl,--build-id=sha1", "-o", lib, C_DIR / "symbolizer_lib.c")
    target = C_DIR / "symbolizer_target.c"
    link = ("-L", out, f"-l{LIB_NAME}", f"-Wl,-rpath,{out}")
    variants = {
        "pie": ("-fPIE", "-pie", "-Wl,--build-id=sha1"),
        "nopie": ("-fno-pie", "-no-pie", "-Wl,--build-id=sha1"),
        "rdynamic": ("-fPIE", "-pie", "-rdynamic", "-Wl,--build-id=sha1"),
        "no_build_id": ("-fPIE", "-pie", "-Wl,--build-id=none"),
    }
    for name, flags in variants.items():
        _gcc(*flags, "-o", out / name, target, *link)
    subprocess.run(["strip", "--strip-all", "-o", str(out / "stripped"), str(out / "rdynamic")], check=True)
    return Binaries(
        lib=lib,
        pie=out / "pie",
        nopie=out / "nopie",
        rdynamic=out / "rdynamic",
        stripped=out / "stripped",
        no_build_id=out / "no_build_id",
    )


@dataclass(frozen=True)
class DebugVariants:
    """Separate-debug-info layouts of ``Binaries.pie`` (whose .dynsym names none of its own
    functions, so every such name in a stripped variant must come from debug information)."""

    debug: Path  # `objcopy --only-keep-debug pie`: .symtab and DWARF, code sections NOBITS
    stripped: Path  # `strip --strip-all pie`: no .symtab, no link, no MiniDebugInfo
    linked: Path  # stripped + `--add-gnu-debuglink` naming "pie.debug" with its CRC32
    mini: Path  # stripped + .gnu_debugdata: xz of a .symtab-only ELF (Fedora's MiniDebugInfo)


def _tool(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def build_debug_variants(out: Path, pie: Path) -> DebugVariants:
    """Build the debug layouts of ``pie`` into ``out`` with objcopy, strip, nm and xz."""
    out.mkdir(parents=True, exist_ok=True)
    debug = out / "pie.debug"
    _tool("objcopy", "--only-keep-debug", pie, debug)
    stripped = out / "stripped"
    _tool("strip", "--strip-all", "-o", stripped, pie)
    linked = out / "linked"
    _tool("objcopy", f"--add-gnu-debuglink={debug}", stripped, linked)
    # MiniDebugInfo as Fedora makes it: keep the function symbols .dynsym lacks, drop DWARF.
    dynamic = {line.split()[0] for line in _tool("nm", "-D", "--format=posix", "--defined-only", pie).splitlines()}
    keep = [
        fields[0]
        for fields in (line.split() for line in _tool("nm", "--format=posix", "--defined-only", pie).splitlines())
        if fields[1] in "Tt" and fields[0] not in dynamic
    ]
    (out / "keep").write_text("\n".join(keep) + "\n")
    _tool("objcopy", "--only-keep-debug", pie, out / "mini.elf")
    _tool("objcopy", "-S", "--remove-section", ".comment", f"--keep-symbols={out / 'keep'}", out / "mini.elf")
    _tool("xz", "--force", "--keep", out / "mini.elf")
    mini = out / "mini"
    _tool("objcopy", f"--add-section=.gnu_debugdata={out / 'mini.elf.xz'}", stripped, mini)
    return DebugVariants(debug=debug, stripped=stripped, linked=linked, mini=mini)
