"""DWARF file:line and inlined frames, compared with binutils' addr2line -f -i -C.

GIVEN fixtures compiled now (C at -O1 -g as PIE, non-PIE, shared library, DWARF 4 and 5;
C++ templates with inlined calls at -O2; a stripped binary with a .gnu_debuglink),
WHEN ``hostflame symbolize -a -f -i`` names addresses spread over .text,
THEN every frame's function and line (inlined frames included) equal addr2line's, and the
persistent cache gives the same answers in a second run.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from sym_build import Binaries, DebugVariants

from agent.symbolize_cmd import run_symbolize
from symbolizer.diskcache import decode_record, encode_record
from symbolizer.source_cache import INDEX, KIND_SOURCE, SOURCE_VERSION

CPP_SOURCE = Path(__file__).resolve().parents[2] / "fixtures" / "cpp" / "inlines.cpp"
SAMPLES = 400


def _text_range(path: Path) -> tuple[int, int]:
    out = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if " .text " in line:
            fields = line.split("]", 1)[1].split()
            return int(fields[2], 16), int(fields[4], 16)
    raise AssertionError(f"{path} has no .text")


def _addresses(path: Path, seed: int = 3) -> list[int]:
    start, size = _text_range(path)
    rng = random.Random(seed)
    return sorted({rng.randrange(start, start + size) for _ in range(SAMPLES)})


def _frames(text: str) -> list[list[tuple[str, str]]]:
    """Per address, (function, line number) of each frame; files are compared separately."""
    lines = text.splitlines()
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith("0x"):
            blocks.append([])
        else:
            blocks[-1].append(line)
    out = []
    for block in blocks:
        pairs = []
        for function, location in zip(block[::2], block[1::2], strict=True):
            number = location.rsplit(":", 1)[1].split(" ")[0]
            pairs.append((function, number))
        out.append(pairs)
    return out


def _same(got: list[list[tuple[str, str]]], expected: list[list[tuple[str, str]]]) -> bool:
    """Equal frame by frame; where binutils names an inlined function whose abstract origin has
    no DW_AT_linkage_name (a C++ static template, any Go function) by a function containing
    it, the line must still agree and hostflame's DW_AT_name of the inlined function is
    accepted (eu-addr2line and gdb name it as hostflame does)."""
    if len(got) != len(expected):
        return False
    for ours, theirs in zip(got, expected, strict=True):
        if len(ours) != len(theirs):
            return False
        for depth, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            if mine == other:
                continue
            outer_names = {name for name, _ in theirs[depth + 1 :]}
            quirk = other[0] in outer_names and mine[1] == other[1]
            if not quirk:
                return False
    return True


def _ours(path: Path, addrs: list[int], cache_dir: Path | None = None) -> str:
    stdin = io.StringIO("".join(f"{a:x}\n" for a in addrs))
    stdout = io.StringIO()
    run_symbolize(str(path), addresses=True, functions=True, inlines=True,
                  cache_dir=str(cache_dir) if cache_dir else None, stdin=stdin, stdout=stdout)
    return stdout.getvalue()


def _addr2line(path: Path, addrs: list[int]) -> str:
    return subprocess.run(["addr2line", "-a", "-f", "-i", "-C", "-e", str(path)], check=True, text=True,
                          capture_output=True, input="".join(f"{a:x}\n" for a in addrs)).stdout


def _assert_agree(path: Path, tmp_path: Path) -> None:
    addrs = _addresses(path)
    expected = _frames(_addr2line(path, addrs))
    cold = _ours(path, addrs, tmp_path / "cache")
    assert _same(_frames(cold), expected)
    warm = _ours(path, addrs, tmp_path / "cache")
    assert warm == cold
    # new addresses in a warm cache: answered through the restored index
    others = _addresses(path, seed=4)
    assert _same(_frames(_ours(path, others, tmp_path / "cache")), _frames(_addr2line(path, others)))


@pytest.fixture(scope="module")
def cpp_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("g++") is None:
        pytest.fail("g++ not found: install g++")
    out = tmp_path_factory.mktemp("dwarf-cpp")
    built = {}
    for name, flags in {"cpp-O2-dwarf5": ["-gdwarf-5"], "cpp-O2-dwarf4": ["-gdwarf-4"],
                        "cpp-O2-nopie": ["-gdwarf-5", "-no-pie", "-fno-pie"]}.items():
        exe = out / name
        subprocess.run(["g++", "-O2", *flags, "-o", str(exe), str(CPP_SOURCE)], check=True)
        built[name] = exe
    return built


@pytest.mark.parametrize("name", ["cpp-O2-dwarf5", "cpp-O2-dwarf4", "cpp-O2-nopie"])
def test_cpp_inlines_agree_with_addr2line(cpp_binaries: dict[str, Path], name: str, tmp_path: Path) -> None:
    # GIVEN a C++ program whose templates are inlined at -O2
    path = cpp_binaries[name]
    addrs = _addresses(path)
    # WHEN both name the same addresses
    expected = _frames(_addr2line(path, addrs))
    got = _frames(_ours(path, addrs, tmp_path / "cache"))
    # THEN every frame agrees, inlined ones included (and there are inlined ones)
    assert _same(got, expected)
    # AND new addresses answered through the index restored from the disk cache agree too
    others = _addresses(path, seed=5)
    assert _same(_frames(_ours(path, others, tmp_path / "cache")), _frames(_addr2line(path, others)))
    assert sum(len(frames) > 1 for frames in expected) > 10
    assert any("hf::Accumulator<long>::add(long)" == function for frames in got for function, _ in frames)


def test_c_binaries_agree_with_addr2line(binaries: Binaries, tmp_path: Path) -> None:
    for path in (binaries.pie, binaries.nopie, binaries.lib):
        _assert_agree(path, tmp_path / path.name)


def test_stripped_binary_uses_its_debuglink_file(debug_variants: DebugVariants, tmp_path: Path) -> None:
    # GIVEN a stripped binary whose DWARF lives in the file its .gnu_debuglink names
    path = debug_variants.linked
    addrs = _addresses(path)
    # WHEN hostflame and addr2line (which follows the link too) name its addresses
    expected = _frames(_addr2line(path, addrs))
    got = _frames(_ours(path, addrs))
    # THEN they agree and lines were found
    assert got == expected
    assert any(number not in ("0", "?") for frames in got for _, number in frames)


def test_dwarf4_c_binary(binaries: Binaries, tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "fixtures" / "c" / "symbolizer_target.c"
    exe = tmp_path / "target-dwarf4"
    lib_dir = binaries.lib.parent
    subprocess.run(["gcc", "-O2", "-gdwarf-4", "-o", str(exe), str(src), f"-L{lib_dir}", "-lhfsym"], check=True)
    _assert_agree(exe, tmp_path)


def test_damaged_index_cache_is_rebuilt(cpp_binaries: dict[str, Path], tmp_path: Path) -> None:
    # GIVEN a warm cache whose index file is replaced by a valid record with broken trees
    path = cpp_binaries["cpp-O2-dwarf5"]
    addrs = _addresses(path)
    _ours(path, addrs[: len(addrs) // 2], tmp_path / "cache")
    index_file = next((tmp_path / "cache" / "dwarf").glob("*.dwarfidx"))
    build_id = bytes.fromhex(index_file.name.split(".")[0])
    rows = json.loads(bytes(decode_record(index_file.read_bytes(), KIND_SOURCE, SOURCE_VERSION + INDEX.encode()
                                          + build_id)[0]))
    for row in rows:
        row[6] = {key: [["x", "", 0, [5], [1], [0]]] for key in row[6]}  # a child pointing at itself
    index_file.write_bytes(encode_record(KIND_SOURCE, SOURCE_VERSION + INDEX.encode() + build_id,
                                         [json.dumps(rows).encode()]))
    # WHEN the other half is named, THEN the answers still agree with addr2line
    others = addrs[len(addrs) // 2 :]
    assert _same(_frames(_ours(path, others, tmp_path / "cache")), _frames(_addr2line(path, others)))
