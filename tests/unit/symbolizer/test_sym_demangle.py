"""Demangling C++ (Itanium) and Rust (legacy and v0), judged by binutils' c++filt and, for
Rust v0, by LLVM's ``rustDemangle`` (libLLVM, which hostflame used before its own demangler).

c++filt prints Rust v0 names in the verbose form (crate disambiguators ``[hash]``, const
generic types ``4: usize``); hostflame prints the short form (as Rust's own backtraces do),
so those two decorations are removed from c++filt's answer before comparing; likewise the
``::h<hash>`` suffix of a legacy Rust name, which hostflame drops (as rustfilt does).
LLVM prints the short form itself, so its answers are compared as they are, also for names
damaged on purpose (both must refuse the same ones).
"""

from __future__ import annotations

import ctypes
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from symbolizer.demangle import demangle
from symbolizer.rust_demangle import demangle_rust_v0

RUST_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "rust"
RUST_SOURCE = RUST_DIR / "hfrust.rs"
ZOO_SOURCE = RUST_DIR / "v0_zoo.rs"  # one function per shape of the v0 grammar
LLVM_RUST_DEMANGLE = "_ZN4llvm12rustDemangleEPKcPcPmPi"  # char *rustDemangle(const char*, char*, size_t*, int*)
CPP_SOURCE = Path(__file__).resolve().parents[2] / "fixtures" / "cpp" / "inlines.cpp"


def _cxxfilt(names: list[str]) -> list[str]:
    out = subprocess.run(["c++filt"], input="\n".join(names) + "\n", check=True, capture_output=True, text=True)
    return out.stdout.splitlines()


def _symbols(exe: Path, prefix: str) -> list[str]:
    out = subprocess.run(["nm", str(exe)], check=True, capture_output=True, text=True).stdout
    rows = (line.split() for line in out.splitlines())
    return sorted({f[2] for f in rows if len(f) == 3 and f[2].startswith(prefix)})


def test_cpp_names_match_cxxfilt(tmp_path: Path) -> None:
    exe = tmp_path / "cpp"
    subprocess.run(["g++", "-O2", "-g", "-o", str(exe), str(CPP_SOURCE)], check=True)
    names = _symbols(exe, "_Z")
    assert len(names) > 5
    assert [demangle(n) for n in names] == _cxxfilt(names)


def test_rust_v0_names_match_cxxfilt(tmp_path: Path) -> None:
    if shutil.which("rustc") is None:
        pytest.fail("rustc not found")
    exe = tmp_path / "rust-v0"
    subprocess.run(["rustc", "-g", "-C", "symbol-mangling-version=v0", "-o", str(exe), str(RUST_SOURCE)],
                   check=True)
    names = [n for n in _symbols(exe, "_R") if "." not in n]  # LLVM's ".0" suffixes are printed differently
    assert any("hfrust" in demangle(n) for n in names)
    expected = [re.sub(r"(\d+): [a-z0-9]+", r"\1", re.sub(r"\[[0-9a-f]{16}\]", "", line)) for line in _cxxfilt(names)]
    assert [demangle(n) for n in names] == expected


@pytest.fixture(scope="module")
def zoo_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every v0 symbol of the zoo fixture linked with the standard library (~700 names)."""
    if shutil.which("rustc") is None:
        pytest.fail("rustc not found")
    exe = tmp_path_factory.mktemp("rust-zoo") / "v0_zoo"
    subprocess.run(["rustc", "-C", "symbol-mangling-version=v0", "-o", str(exe), str(ZOO_SOURCE)], check=True)
    return _symbols(exe, "_R")


def _llvm_rust_demangle() -> ctypes._CFuncPtr:
    for name in ("libLLVM-14.so.1", "libLLVM-15.so.1", "libLLVM-16.so.1"):
        try:
            fn = getattr(ctypes.CDLL(name), LLVM_RUST_DEMANGLE)
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        return fn
    pytest.fail("libLLVM not found (bcc depends on it): install python3-bpfcc")


def _llvm(names: list[str]) -> list[str | None]:
    fn = _llvm_rust_demangle()
    out: list[str | None] = []
    for name in names:
        status = ctypes.c_int()
        raw = fn(name.encode(), None, None, ctypes.byref(status))  # leaked: a test process
        out.append(ctypes.string_at(raw).decode("utf-8", "replace") if raw and status.value == 0 else None)
    return out


def test_rust_v0_zoo_matches_llvm(zoo_names: list[str]) -> None:
    # GIVEN every v0 name of a binary built to hold each shape of the grammar (and .llvm suffixes)
    assert len(zoo_names) > 300
    expected = _llvm(zoo_names)
    assert all(expected)
    # THEN hostflame prints exactly what LLVM prints, among them these shapes
    assert [demangle(n) for n in zoo_names] == expected
    shown = "\n".join(str(e) for e in expected)
    for shape in ["v0_zoo::größe", "v0_zoo::数える", "<v0_zoo::Square<u8> as v0_zoo::Shape>::area",
                  "v0_zoo::by_const_i64::<-42>", "v0_zoo::by_const_bool::<true>", "v0_zoo::by_const_char::<'\\n'>",
                  "for<'a> fn(&'a u8) -> &'a u8", 'unsafe extern "system" fn(*const u8) -> u8',
                  "dyn v0_zoo::Shape<Out = u64> + core::marker::Send", "[u16; 4]", "(u64,)", "{closure#0}",
                  "{shim:vtable#0}", "v0_zoo::inner::deeper::nested::<u16>", "<v0_zoo::Pair<u32, f64>>::first",
                  "v0_zoo::by_const_u128::<0xfffffffffffffffffffffffffffffffa>", "::MAIN (.0)"]:
        assert shape in shown, shape


def test_rust_v0_zoo_matches_cxxfilt(zoo_names: list[str]) -> None:
    # c++filt prints ".0" suffixes differently, and a const wider than 64 bits with its "_" terminator
    names = [n for n in zoo_names if "." not in n and "u128" not in demangle(n)]
    const_type = r"(\S): (?:bool|char|[iu](?:8|16|32|64|128|size))\b"
    expected = [re.sub(const_type, r"\1", re.sub(r"\[[0-9a-f]{16}\]", "", line)) for line in _cxxfilt(names)]
    assert [demangle(n) for n in names] == expected


def test_damaged_rust_v0_names_are_refused_as_llvm_refuses_them(zoo_names: list[str]) -> None:
    # GIVEN real v0 names with 1 to 3 characters replaced, deleted or inserted (a fixed seed)
    rng = random.Random(20260427)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    damaged = []
    for _ in range(4000):
        name = list(rng.choice(zoo_names))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(2, len(name))
            action = rng.randrange(3)
            if action == 0:
                name[at] = rng.choice(alphabet)
            elif action == 1 and len(name) > 3:
                del name[at]
            else:
                name.insert(at, rng.choice(alphabet))
        damaged.append("".join(name))
    # THEN hostflame answers as LLVM does: the same text, or a refusal (the name stays as it is)
    expected = _llvm(damaged)
    assert sum(e is None for e in expected) > 1000  # enough of them are really broken
    assert [demangle_rust_v0(n) for n in damaged] == expected


@pytest.mark.parametrize("name", ["_RNvC" + "B_" * 5000, "_R" + "NvNv" * 400 + "C1a1b" + "1c" * 400,
                                  "_RINvC1a1fTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTB" + "_E" * 40 + "E"])
def test_hostile_rust_v0_names_are_refused_cheaply(name: str) -> None:
    # Self-references, nesting past the depth bound, output past its bound: refused, not expanded
    assert demangle_rust_v0(name) is None


@pytest.mark.parametrize("name", ["_ZN4core3fmt5write17h0123456789abcdefE",
                                  "_ZN6hfrust7Squares4work17h00112233445566ffE",
                                  "_ZN5alloc5alloc15exchange_malloc17h9f1e2d3c4b5a6978E"])
def test_rust_legacy_names_match_cxxfilt_without_the_hash(name: str) -> None:
    assert demangle(name) == re.sub(r"::h[0-9a-f]{16}$", "", _cxxfilt([name])[0])


@pytest.mark.parametrize("name", ["main", "_Zbad", "_Rbad", "_ZN" + "9abcdefghi" * 500])
def test_unmangled_or_broken_names_are_returned_unchanged(name: str) -> None:
    assert demangle(name) == name
