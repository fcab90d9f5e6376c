"""Symbolizer stage: linker (mangled) names in, readable names out.

In: a symbol name as ELF or DWARF spells it. Out: the demangled name, or the name unchanged
when it is not mangled or cannot be demangled. C++ (Itanium ``_Z``) and Rust legacy mangling
(``_ZN...17h<hash>E``, an Itanium-compatible form) go through libstdc++'s ``__cxa_demangle``
(ctypes); Rust legacy names lose their ``::h<hash>`` suffix, as rustfilt and addr2line print
them. Rust v0 (``_R``) names go through ``symbolizer.rust_demangle`` (Python, printing what
LLVM's ``rustDemangle`` prints, without the ~47 MB of resident memory libLLVM costs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from typing import Any

from symbolizer.rust_demangle import demangle_rust_v0

MAX_NAME = 4096  # longer names are left as they are (the demangler's cost grows with them)
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


@functools.cache
def _cxa_demangle() -> tuple[Any, Any] | None:
    for name in ("libstdc++.so.6", ctypes.util.find_library("stdc++")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            libc = ctypes.CDLL(None)
        except OSError:
            continue
        fn = lib.__cxa_demangle
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        free = libc.free
        free.restype = None
        free.argtypes = [ctypes.c_void_p]
        return fn, free
    return None


def _call(fn: Any, name: str) -> str | None:
    """Run a demangler with the __cxa_demangle calling convention; None when it refuses."""
    functions = _cxa_demangle()
    if functions is None:
        return None
    status = ctypes.c_int()
    raw = fn(name.encode("utf-8", "replace"), None, None, ctypes.byref(status))
    if not raw:
        return None
    try:
        return ctypes.string_at(raw).decode("utf-8", "replace") if status.value == 0 else None
    finally:
        functions[1](raw)


@functools.lru_cache(maxsize=1 << 16)
def demangle(name: str) -> str:
    """The readable form of ``name``; ``name`` itself when it is not mangled or cannot be demangled."""
    if len(name) > MAX_NAME:
        return name
    if name.startswith("_R"):
        return demangle_rust_v0(name) or name
    if not name.startswith("_Z"):
        return name
    functions = _cxa_demangle()
    if functions is None:
        return name
    text = _call(functions[0], name)
    if text is None:
        return name
    if name.startswith("_ZN") and name.endswith("E") and _RUST_HASH.search(text):
        text = _RUST_HASH.sub("", text)
    return text
