"""symbolizer.dwarf_plain: compressed DWARF is kept decompressed in the cache directory, and
answers from the copy are addr2line's on the compressed original.

GIVEN the fixture program with its DWARF compressed (objcopy --compress-debug-sections=zlib,
as distributions ship debug files), WHEN it is symbolized with a cache directory, THEN libdw
opens the uncompressed copy, and each frame's file and line are what addr2line reads from the
compressed file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sym_build import Binaries
from sym_helpers import readelf_build_id
from test_sym_facade_lines import _addr2line, pinned, record_dwarf_opens
from test_sym_symbolizer import NOWHERE

from symbolizer import Symbolizer
from symbolizer.diskcache import CacheDir
from symbolizer.dwarf_plain import SUFFIX, plain_dwarf
from symbolizer.elf import read_elf_info


@pytest.fixture
def compressed(binaries: Binaries, tmp_path: Path) -> Path:
    path = tmp_path / "compressed"
    subprocess.run(["objcopy", "--compress-debug-sections=zlib", str(binaries.pie), str(path)], check=True)
    assert "C" in next(line for line in subprocess.run(["readelf", "-SW", str(path)], capture_output=True,
                                                        text=True, check=True).stdout.splitlines()
                       if ".debug_info" in line).split(".debug_info", 1)[1]
    return path


def test_frames_come_from_the_uncompressed_copy_with_addr2lines_lines(
    compressed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = record_dwarf_opens(monkeypatch)
    cache = tmp_path / "cache"
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(cache))
    with pinned(symbolizer, compressed) as p:
        stack, bias = p.stack, p.bias
        result = symbolizer.symbolize_user(p.pid, p.maps, stack)
    # THEN libdw read the copy, kept under the binary's build-id
    copy = cache / "dwarf" / f"{readelf_build_id(compressed).hex()}{SUFFIX}"
    assert opened == [str(copy)]
    # AND the frames carry what addr2line reads from the compressed binary
    elf_vaddrs = [addr - bias - (1 if index else 0) for index, addr in enumerate(stack)]
    assert [(s.frames[0].file, s.frames[0].line) for s in result] == _addr2line(compressed, elf_vaddrs)
    assert all(s.frames[0].line > 0 for s in result)
    # AND readelf sees in the copy every DWARF section of the original
    assert debug_sections(compressed) and debug_sections(copy) == debug_sections(compressed)


def debug_sections(path: Path) -> list[str]:
    listing = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True).stdout
    return sorted(word for line in listing.splitlines() for word in line.split() if word.startswith(".debug_"))


def test_a_damaged_copy_is_made_again_and_an_uncompressed_binary_needs_none(
    compressed: Path, binaries: Binaries, tmp_path: Path
) -> None:
    cache = CacheDir(str(tmp_path / "cache"), 1 << 30)
    fd = os.open(compressed, os.O_RDONLY)
    try:
        info = read_elf_info(fd)
        first = plain_dwarf(fd, info, cache)
        assert first is not None
        os.close(first)
        copy = tmp_path / "cache" / f"{info.build_id.hex()}{SUFFIX}"
        good = copy.read_bytes()
        # WHEN the copy is replaced by a truncated one THEN it is made again, the same
        truncated = tmp_path / "truncated"
        truncated.write_bytes(good[: len(good) // 2])
        truncated.replace(copy)
        again = plain_dwarf(fd, info, cache)
        assert again is not None
        os.close(again)
        assert copy.read_bytes() == good
        assert cache.counters == {"plain_writes": 2}
    finally:
        os.close(fd)
    # AND a binary whose DWARF is not compressed gets no copy
    fd = os.open(binaries.pie, os.O_RDONLY)
    try:
        assert plain_dwarf(fd, read_elf_info(fd), cache) is None
    finally:
        os.close(fd)


def test_a_binary_without_build_id_gets_a_copy_named_by_its_identity(binaries: Binaries, tmp_path: Path) -> None:
    # GIVEN a binary with compressed DWARF and no GNU build-id (as Go links by default)
    path = tmp_path / "no-build-id"
    subprocess.run(["objcopy", "--compress-debug-sections=zlib", str(binaries.no_build_id), str(path)], check=True)
    cache = CacheDir(str(tmp_path / "cache"), 1 << 30)
    fd = os.open(path, os.O_RDONLY)
    try:
        info = read_elf_info(fd)
        assert info.build_id == b""
        copy = plain_dwarf(fd, info, cache)
    finally:
        os.close(fd)
    # THEN a copy exists under a name made of the file's identity, with the original's sections
    assert copy is not None
    try:
        st = path.stat()
        name = f"file-{st.st_dev:x}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}{SUFFIX}"
        assert os.readlink(f"/proc/self/fd/{copy}") == str(tmp_path / "cache" / name)
        assert debug_sections(tmp_path / "cache" / name) == debug_sections(path)
    finally:
        os.close(copy)
