"""``hostflame symbolize``: ELF virtual addresses on stdin, addr2line's layout on stdout.

In: the file (``-e``), flags as ``addr2line -a -f -i -C`` takes them, hex addresses one per
line (``0x`` optional). Out: per address, with ``--addresses`` the address as ``0x%016x``;
then per frame (only the innermost without ``--inlines``) the demangled function (with
``--functions``, ``??`` when unknown) and ``file:line`` (``??:0`` when nothing names the address, ``??:?`` for a
function without a line, with
`` (discriminator N)`` as addr2line prints it). A line that is not hex is echoed back, as
addr2line does. With ``DEBUGINFOD_URLS`` set, a file without DWARF or .symtab has its debug
file fetched by build-id first (cached under ``--cache-dir``/debuginfod, else
``~/.cache/hostflame/debuginfod``).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from agent.errors import HostflameError
from symbolizer.debuginfod import Debuginfod, urls_from_env
from symbolizer.errors import SymbolizerError
from symbolizer.offline import FileSymbolizer
from symbolizer.source import NamedFrame


def run_symbolize(path: str, *, addresses: bool, functions: bool, inlines: bool, cache_dir: str | None,
                  stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    urls = urls_from_env()
    debuginfod = None
    if urls:
        base = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hostflame")
        debuginfod = Debuginfod(urls, os.path.join(base, "debuginfod"))
    try:
        symbolizer = FileSymbolizer(path, cache_dir, debuginfod=debuginfod)
    except (SymbolizerError, OSError) as err:
        raise HostflameError(f"cannot read {path} as ELF: {err}") from None
    out: list[str] = []
    try:
        for raw in stdin:
            text = raw.strip()
            if not text:
                continue
            try:
                elf_vaddr = int(text, 16)
            except ValueError:
                out.append(text)
                continue
            if addresses:
                out.append(f"0x{elf_vaddr:016x}")
            frames = symbolizer.frames(elf_vaddr)
            if frames is None:
                frames = (NamedFrame("", "", "", 0),)
            for frame in frames if inlines else frames[:1]:
                if functions:
                    out.append(frame.function or "??")
                out.append(_location(frame))
            if len(out) > 4096:
                stdout.write("\n".join(out) + "\n")
                out.clear()
    finally:
        symbolizer.close()
    if out:
        stdout.write("\n".join(out) + "\n")
    stdout.flush()
    return 0


def _location(frame: NamedFrame) -> str:
    if not frame.file:
        return "??:0" if not frame.function else "??:?"
    suffix = f" (discriminator {frame.discriminator})" if frame.discriminator else ""
    return f"{frame.file}:{frame.line if frame.line else '?'}{suffix}"
