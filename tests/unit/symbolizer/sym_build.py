"""Builds the symbolizer's test binaries with gcc at test time (never committed).

From tests/fixtures/c/symbolizer_{target,lib}.c: a shared library, and the target program as
PIE, non-PIE, PIE with -rdynamic (and a --strip-all copy of it: only .dynsym left), and PIE
without a build-id. All keep frame pointers; functions are neither reordered nor padded, so
the "call as the last instruction" case stays adjacent to the next function.
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
