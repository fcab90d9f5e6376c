"""The compiled-program record: map fds in instructions are found and re-patched, the record
survives a round trip, a changed program, option or kernel gets another key, and a record that
others could have written, or that is damaged, is never used."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from agent import bpf_object
from agent.bpf_handover import MAPS, PROGRAMS, LoadOptions
from agent.bpf_object import CompiledProgram, MapSpec, ProgramSpec


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("=BBhi", code, (src << 4) | dst, off, imm)


LD_MAP_FD = insn(0x18, dst=1, src=1, imm=7) + insn(0, imm=0)       # r1 = map fd 7 (two slots)
LD_MAP_VALUE = insn(0x18, dst=2, src=2, imm=9) + insn(0, imm=16)   # r2 = &value of map fd 9, +16
LD_CONSTANT = insn(0x18, dst=3, src=0, imm=7) + insn(0, imm=0)     # r3 = 7: not a map
MOV_7 = insn(0xB7, dst=4, imm=7)                                   # r4 = 7: not a map
EXIT = insn(0x95)
PROGRAM_TEXT = MOV_7 + LD_MAP_FD + LD_CONSTANT + LD_MAP_VALUE + EXIT


def test_map_fds_are_found_only_in_map_loads() -> None:
    # GIVEN instructions as bcc leaves them: fds 7 and 9 embedded, plus a constant 7 twice
    # WHEN the relocations are listed
    relocations = bpf_object.find_relocations(PROGRAM_TEXT, {7: "counts0", 9: "control"})
    # THEN only the two map loads are listed, by instruction index, the second slot skipped
    assert relocations == ((1, "counts0"), (5, "control"))


def test_an_unknown_map_fd_is_refused() -> None:
    with pytest.raises(ValueError, match="fd 7"):
        bpf_object.find_relocations(PROGRAM_TEXT, {9: "control"})


def test_patch_puts_new_fds_where_the_old_ones_were() -> None:
    # GIVEN the relocations of the program above
    relocations = bpf_object.find_relocations(PROGRAM_TEXT, {7: "counts0", 9: "control"})
    # WHEN fresh fds are patched in
    patched = bpf_object.patch(PROGRAM_TEXT, relocations, {"counts0": 41, "control": 42})
    # THEN exactly the two imm fields changed, to the new fds
    expected = bytearray(PROGRAM_TEXT)
    struct.pack_into("=i", expected, 1 * 8 + 4, 41)
    struct.pack_into("=i", expected, 5 * 8 + 4, 42)
    assert patched == bytes(expected)
    assert bpf_object.find_relocations(patched, {41: "counts0", 42: "control"}) == relocations


def a_record() -> CompiledProgram:
    maps = tuple(MapSpec(name, 1, 4, 8, 16, 0) for name in MAPS)
    programs = tuple(ProgramSpec(name, 7, "GPL", PROGRAM_TEXT, ((1, "counts0"), (5, "control"))) for name in PROGRAMS)
    return CompiledProgram(maps, programs)


def test_record_round_trip(tmp_path: Path) -> None:
    # GIVEN a record written to disk
    path = tmp_path / "bpf" / "profile-x.json"
    bpf_object.write_record(path, a_record())
    # THEN it reads back equal, owner-only, in an owner-only directory
    assert bpf_object.read_record(path) == a_record()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("damage", [
    lambda text: text.replace('"format": 1', '"format": 99'),
    lambda text: text.replace('"counts0"', '"nosuch"', 1),
    lambda text: text[: len(text) // 2],
    lambda text: text.replace('"relocations": [[1, "counts0"]', '"relocations": [[1, "elsewhere"]', 1),
], ids=["other format", "a map missing", "truncated", "relocation to no map"])
def test_a_damaged_record_is_ignored(tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "profile-x.json"
    bpf_object.write_record(path, a_record())
    assert callable(damage)
    path.write_text(damage(path.read_text()))
    with caplog.at_level(logging.WARNING):
        assert bpf_object.read_record(path) is None
    assert "ignoring the compiled-program record" in caplog.text


def test_a_record_others_can_write_is_never_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "profile-x.json"
    bpf_object.write_record(path, a_record())
    path.chmod(0o666)
    with caplog.at_level(logging.WARNING):
        assert bpf_object.read_record(path) is None
    assert "writable by others" in caplog.text


def test_no_record_is_none(tmp_path: Path) -> None:
    assert bpf_object.read_record(tmp_path / "absent.json") is None


def fake_host(root: Path, version: str, possible: str = "0-1") -> tuple[Path, Path]:
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/version").write_text(version)
    cpu = root / "sys/devices/system/cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    (cpu / "possible").write_text(possible)
    return root / "proc", root / "sys"


def test_key_follows_options_kernel_and_cpus(tmp_path: Path) -> None:
    proc, sys_root = fake_host(tmp_path / "a", "Linux version 6.1.0-56-amd64 #1 SMP\n")
    proc_b, sys_b = fake_host(tmp_path / "b", "Linux version 6.1.0-57-amd64 #1 SMP\n")
    proc_c, sys_c = fake_host(tmp_path / "c", "Linux version 6.1.0-56-amd64 #1 SMP\n", "0-3")
    key = bpf_object.cache_key(LoadOptions(), proc_root=proc, sys_root=sys_root)
    # the same program and kernel: the same key; the sampling frequency is not compiled in
    assert bpf_object.cache_key(LoadOptions(frequency_hz=49), proc_root=proc, sys_root=sys_root) == key
    # a map size is compiled in; so are the kernel and the CPU count
    assert bpf_object.cache_key(LoadOptions(stack_map_size=1024), proc_root=proc, sys_root=sys_root) != key
    assert bpf_object.cache_key(LoadOptions(), proc_root=proc_b, sys_root=sys_b) != key
    assert bpf_object.cache_key(LoadOptions(), proc_root=proc_c, sys_root=sys_c) != key
