"""Demangling C++ (Itanium) and Rust (legacy and v0), judged by binutils' c++filt.

c++filt prints Rust v0 names in the verbose form (crate disambiguators ``[hash]``, const
generic types ``4: usize``); hostflame prints the short form (as Rust's own backtraces do),
so those two decorations are removed from c++filt's answer before comparing; likewise the
``::h<hash>`` suffix of a legacy Rust name, which hostflame drops (as rustfilt does).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from symbolizer.demangle import demangle

RUST_SOURCE = Path(__file__).resolve().parents[2] / "fixtures" / "rust" / "hfrust.rs"
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


@pytest.mark.parametrize("name", ["_ZN4core3fmt5write17h0123456789abcdefE",
                                  "_ZN6hfrust7Squares4work17h00112233445566ffE",
                                  "_ZN5alloc5alloc15exchange_malloc17h9f1e2d3c4b5a6978E"])
def test_rust_legacy_names_match_cxxfilt_without_the_hash(name: str) -> None:
    assert demangle(name) == re.sub(r"::h[0-9a-f]{16}$", "", _cxxfilt([name])[0])


@pytest.mark.parametrize("name", ["main", "_Zbad", "_Rbad", "_ZN" + "9abcdefghi" * 500])
def test_unmangled_or_broken_names_are_returned_unchanged(name: str) -> None:
    assert demangle(name) == name
