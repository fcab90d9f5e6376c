"""Go binaries: DWARF lines (no .debug_aranges, compressed sections) and .gopclntab names.

GIVEN tests/fixtures/go/spin.go built now with Debian's golang-go: as is, with
``-ldflags=-s`` (no .symtab) and ``strip`` -ped,
WHEN hostflame names addresses spread over .text,
THEN the unstripped binary agrees with addr2line -f -i -C (function and line of every frame),
and the stripped ones name each address as addr2line names it in the unstripped binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_sym_dwarf import _addr2line, _addresses, _frames, _ours, _same

from symbolizer.offline import FileSymbolizer

GO_SOURCE = Path(__file__).resolve().parents[2] / "fixtures" / "go" / "spin.go"


@pytest.fixture(scope="module")
def go_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("go") is None:
        pytest.fail("go not found: install golang-go")
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOCACHE": str(out / "cache"), "GOPATH": str(out / "gopath"), "GO111MODULE": "off",
           "GOFLAGS": ""}
    built = {"plain": out / "spin", "ldflags_s": out / "spin-s", "stripped": out / "spin-strip"}
    subprocess.run(["go", "build", "-o", str(built["plain"]), str(GO_SOURCE)], check=True, env=env, cwd=out)
    subprocess.run(["go", "build", "-ldflags=-s", "-o", str(built["ldflags_s"]), str(GO_SOURCE)], check=True,
                   env=env, cwd=out)
    subprocess.run(["strip", "-o", str(built["stripped"]), str(built["plain"])], check=True)
    return built


def test_go_dwarf_agrees_with_addr2line(go_binaries: dict[str, Path], tmp_path: Path) -> None:
    path = go_binaries["plain"]
    addrs = _addresses(path)
    # (assembly functions: addr2line takes the linker's "name.abi0" from .symtab, DWARF says "name")
    expected = _frames(_addr2line(path, addrs).replace(".abi0\n", "\n"))
    got = _frames(_ours(path, addrs, tmp_path / "cache").replace(".abi0\n", "\n"))
    mismatches = [(hex(a), g, e) for a, g, e in zip(addrs, got, expected, strict=True) if not _same([g], [e])]
    assert not mismatches
    assert any(number not in ("0", "?") for frames in got for _, number in frames)


@pytest.mark.parametrize("variant", ["ldflags_s", "stripped"])
def test_stripped_go_named_from_gopclntab(go_binaries: dict[str, Path], variant: str) -> None:
    # GIVEN a Go binary without .symtab (checked with readelf)
    path = go_binaries[variant]
    sections = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
    assert ".symtab" not in sections and ".gopclntab" in sections
    # WHEN its addresses are named
    addrs = _addresses(path)
    reference = _frames(_addr2line(go_binaries["plain"], addrs))
    symbolizer = FileSymbolizer(str(path))
    got = [symbolizer.frames(addr) for addr in addrs]
    symbolizer.close()
    # THEN the outermost function is the one addr2line finds in the unstripped binary (the
    # pclntab names assembly functions as the Go runtime does, without the linker's ".abi0")
    named = [(frames[-1].function if frames else "??") for frames in got]
    assert named == [frames[-1][0].removesuffix(".abi0") for frames in reference]
