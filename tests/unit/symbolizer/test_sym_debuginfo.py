"""symbolizer.debuginfo and the loader: stripped binaries completed from separate debug files
(build-id tree, .gnu_debuglink with its CRC32, MiniDebugInfo), inside a process root first.

Expected names come from nm / readelf on the unstripped binary; the debug layouts are built at
test time with objcopy, strip and xz (sym_build.build_debug_variants).
"""

from __future__ import annotations

import lzma
import os
import shutil
import zlib
from collections import defaultdict
from pathlib import Path

import pytest
from sym_build import Binaries, DebugVariants
from sym_helpers import (
    nm_sorted_text,
    read_maps,
    readelf_build_id,
    readelf_functions,
    readelf_loads,
    run,
    running,
)

from symbolizer import Symbolizer, debuginfo
from symbolizer.debuginfo import DebugLocator, DebugSource, decompress_xz, parse_debuglink
from symbolizer.elf import read_elf_info
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.loader import TableLoader
from symbolizer.model import Mapping
from symbolizer.symtab import SymbolTable

NOWHERE = "/nonexistent-kallsyms"
NO_DEBUG_ROOT = "/nonexistent-debug-root"
HF_FUNCTIONS = ("hf_work", "hf_middle", "hf_static_helper", "hf_calls_at_end", "hf_next_function")


def build_table(
    binary: Path, debug_roots: tuple[str, ...] = (NO_DEBUG_ROOT,), path: str = ""
) -> tuple[SymbolTable, TableLoader]:
    """The table the loader builds for ``binary`` (as if mapped at ``path``) on the host."""
    loader = TableLoader(8, DebugLocator(debug_roots))
    fd = os.open(binary, os.O_RDONLY)
    try:
        return loader.build(fd, read_elf_info(fd), path or str(binary))[0], loader
    finally:
        os.close(fd)


def nm_names(unstripped: Path) -> dict[int, set[str]]:
    found: dict[int, set[str]] = defaultdict(set)
    for addr, name in nm_sorted_text(unstripped):
        found[addr].add(name)
    return found


def assert_names_every_function_of(table: SymbolTable, unstripped: Path) -> None:
    """Every FUNC symbol readelf lists in the unstripped binary is named as nm names it."""
    expected = nm_names(unstripped)
    functions = readelf_functions(unstripped)
    assert {f.name for f in functions} >= set(HF_FUNCTIONS)
    for function in functions:
        assert table.lookup(function.value) in expected[function.value], function
        if function.size > 1:
            assert table.lookup(function.value + function.size - 1) in expected[function.value], function


def test_stripped_pie_alone_names_none_of_its_functions(binaries: Binaries, debug_variants: DebugVariants) -> None:
    # GIVEN the stripped binary with no debug information anywhere (the control case)
    table, loader = build_table(debug_variants.stripped)
    # THEN none of its own functions has a name, and no debug source was used
    assert all(table.lookup(f.value) is None for f in readelf_functions(binaries.pie) if f.name in HF_FUNCTIONS)
    assert loader.debug_files == {}


@pytest.mark.parametrize("place", ["beside", "dot_debug", "debug_root"])
def test_debuglink_in_each_of_gdbs_places(
    tmp_path: Path, binaries: Binaries, debug_variants: DebugVariants, place: str
) -> None:
    # GIVEN a stripped binary with a .gnu_debuglink to "pie.debug", and that file beside it,
    # in .debug/ beside it, or under a debug root + the binary's directory
    app_dir = tmp_path / "opt" / "app"
    app_dir.mkdir(parents=True)
    binary = app_dir / "prog"
    shutil.copy(debug_variants.linked, binary)
    debug_root = tmp_path / "debugroot"
    target = {
        "beside": app_dir / "pie.debug",
        "dot_debug": app_dir / ".debug" / "pie.debug",
        "debug_root": Path(f"{debug_root}{app_dir}") / "pie.debug",
    }[place]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(debug_variants.debug, target)
    # WHEN its table is built
    table, loader = build_table(binary, (str(debug_root),))
    # THEN every function of the unstripped binary is named (nm), through the debug link
    assert_names_every_function_of(table, binaries.pie)
    assert loader.debug_files == {"debuglink": 1}
    assert loader.locator.failures == {}


def test_debuglink_with_a_wrong_crc_is_rejected_and_counted(tmp_path: Path, debug_variants: DebugVariants) -> None:
    # GIVEN the debug file beside the linked binary, altered after the link recorded its CRC32
    shutil.copy(debug_variants.linked, tmp_path / "prog")
    altered = tmp_path / "pie.debug"
    shutil.copy(debug_variants.debug, altered)
    with altered.open("ab") as stream:
        stream.write(b"\0")
    # WHEN the table is built
    table, loader = build_table(tmp_path / "prog")
    # THEN the debug file is not used and the rejection is counted as a mismatch
    assert len(table) == 0
    assert loader.debug_files == {}
    assert loader.locator.failures == {"debug_mismatch": 1}


def build_id_path(root: Path, binary: Path) -> Path:
    hexid = readelf_build_id(binary).hex()
    return root / ".build-id" / hexid[:2] / f"{hexid[2:]}.debug"


def test_build_id_tree_in_an_injected_debug_root(
    tmp_path: Path, binaries: Binaries, debug_variants: DebugVariants
) -> None:
    # GIVEN a stripped binary (no link) and its debug file at .build-id/xx/yyyy.debug under
    # a debug root passed to the loader
    root = tmp_path / "debug"
    path = build_id_path(root, debug_variants.stripped)
    path.parent.mkdir(parents=True)
    shutil.copy(debug_variants.debug, path)
    # WHEN its table is built
    table, loader = build_table(debug_variants.stripped, (str(root),))
    # THEN every function is named, by build-id
    assert_names_every_function_of(table, binaries.pie)
    assert loader.debug_files == {"build_id": 1}


def test_build_id_is_tried_before_the_debuglink(
    tmp_path: Path, binaries: Binaries, debug_variants: DebugVariants
) -> None:
    # GIVEN a linked binary whose debug file is both in the build-id tree and beside it
    shutil.copy(debug_variants.linked, tmp_path / "prog")
    shutil.copy(debug_variants.debug, tmp_path / "pie.debug")
    path = build_id_path(tmp_path / "debug", debug_variants.linked)
    path.parent.mkdir(parents=True)
    shutil.copy(debug_variants.debug, path)
    # WHEN the table is built THEN the build-id tree (gdb's first choice) answered
    table, loader = build_table(tmp_path / "prog", (str(tmp_path / "debug"),))
    assert loader.debug_files == {"build_id": 1}
    assert_names_every_function_of(table, binaries.pie)


def test_build_id_tree_entry_of_another_binary_is_rejected(
    tmp_path: Path, binaries: Binaries, debug_variants: DebugVariants
) -> None:
    # GIVEN the debug file of a different build (nopie) stored under the stripped pie's build-id
    path = build_id_path(tmp_path, debug_variants.stripped)
    path.parent.mkdir(parents=True)
    run("objcopy", "--only-keep-debug", binaries.nopie, path)
    # WHEN the table is built THEN it is refused (build-ids differ) and counted
    table, loader = build_table(debug_variants.stripped, (str(tmp_path),))
    assert loader.debug_files == {}
    assert loader.locator.failures == {"debug_mismatch": 1}
    assert len(table) == 0


def test_minidebuginfo_names_the_functions_dynsym_lacks(binaries: Binaries, debug_variants: DebugVariants) -> None:
    # GIVEN a stripped binary carrying .gnu_debugdata (xz of a .symtab-only ELF) and no
    # other debug information
    # WHEN its table is built
    table, loader = build_table(debug_variants.mini)
    # THEN every function is named from the MiniDebugInfo
    assert_names_every_function_of(table, binaries.pie)
    assert loader.debug_files == {"minidebuginfo": 1}


def test_corrupt_minidebuginfo_is_counted_not_raised(tmp_path: Path, debug_variants: DebugVariants) -> None:
    # GIVEN a stripped binary whose .gnu_debugdata is not xz
    junk = tmp_path / "junk.xz"
    junk.write_bytes(b"\xfd7zXZ\0" + b"\x55" * 200)
    binary = tmp_path / "prog"
    run("objcopy", f"--add-section=.gnu_debugdata={junk}", debug_variants.stripped, binary)
    # WHEN the table is built THEN it is the binary's own (empty) table and the cause is counted
    table, loader = build_table(binary)
    assert len(table) == 0
    assert loader.locator.failures == {"bad_compressed": 1}


def test_minidebuginfo_above_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch, debug_variants: DebugVariants) -> None:
    # GIVEN a decompression cap smaller than the MiniDebugInfo ELF
    monkeypatch.setattr(debuginfo, "MAX_MINIDEBUG_SIZE", 1000)
    # WHEN the table is built THEN the section is refused as too large
    table, loader = build_table(debug_variants.mini)
    assert len(table) == 0
    assert loader.locator.failures == {"too_large": 1}


def test_decompress_xz_caps_and_rejects() -> None:
    packed = lzma.compress(b"x" * 5000, format=lzma.FORMAT_XZ)
    assert decompress_xz(packed, 5000) == b"x" * 5000
    with pytest.raises(SymbolizerError) as too_large:
        decompress_xz(packed, 4999)
    assert too_large.value.cause is Cause.TOO_LARGE
    with pytest.raises(SymbolizerError) as truncated:
        decompress_xz(packed[: len(packed) // 2], 5000)
    assert truncated.value.cause is Cause.BAD_COMPRESSED


@pytest.mark.parametrize(
    "data",
    [b"", b"\0\0\0\0\0\0\0\0", b"a/b.debug\0\0\0\1\2\3\4", b"..\0\0\1\2\3\4", b"name.debug\0\0"],
)
def test_malformed_debuglink_is_bad_elf(data: bytes) -> None:
    with pytest.raises(SymbolizerError) as err:
        parse_debuglink(data, True)
    assert err.value.cause is Cause.BAD_ELF


def test_debuglink_parses_name_and_crc_as_objcopy_wrote_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, debug_variants: DebugVariants
) -> None:
    # GIVEN the .gnu_debuglink section objcopy wrote (dumped by objcopy itself)
    dumped = tmp_path / "debuglink"
    run("objcopy", f"--dump-section=.gnu_debuglink={dumped}", debug_variants.linked, tmp_path / "scratch")
    # WHEN parsed THEN the name is the debug file's basename and the CRC is zlib's CRC32 of it,
    # which is also what file_crc32 computes in (here 100-byte) chunks
    monkeypatch.setattr(debuginfo, "CRC_CHUNK", 100)
    link = parse_debuglink(dumped.read_bytes(), little_endian=True)
    assert link.name == "pie.debug"
    assert link.crc == zlib.crc32(debug_variants.debug.read_bytes())
    fd = os.open(debug_variants.debug, os.O_RDONLY)
    try:
        assert debuginfo.file_crc32(fd, os.fstat(fd).st_size) == link.crc
    finally:
        os.close(fd)


def test_running_stripped_program_is_named_through_its_debuglink(tmp_path: Path, debug_variants: DebugVariants) -> None:
    # GIVEN a running stripped program whose debug file lies beside it (debug link)
    shutil.copy(debug_variants.linked, tmp_path / "prog")
    shutil.copy(debug_variants.debug, tmp_path / "pie.debug")
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, debug_roots=(NO_DEBUG_ROOT,))
    with running(tmp_path / "prog") as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        # WHEN a stack through its functions, the static one included, is symbolized
        stack = [child.printed[name] + 1 for name in HF_FUNCTIONS[:3]]
        result = symbolizer.symbolize_user(child.pid, maps, stack)
    # THEN every frame is named (the program printed its own addresses) and the source counted
    assert [s.frames[0].function for s in result] == list(HF_FUNCTIONS[:3])
    assert all(s.named for s in result)
    assert symbolizer.stats.debug_files == {"debuglink": 1}
    assert symbolizer.stats.debug_failed == {}


# ----- inside a process root (fake /proc) ------------------------------------------------------


def text_mapping(unstripped: Path, on_disk: Path, inside: str, base: int) -> Mapping:
    """The mapping the kernel makes for the first executable PT_LOAD (readelf) at ``base``."""
    text = next(h for h in readelf_loads(unstripped) if "E" in h.flags)
    start = base + text.elf_vaddr - text.elf_vaddr % 0x1000
    offset = text.file_offset - text.file_offset % 0x1000
    return Mapping(start, start + 0x1000, "r-xp", offset, 0, 0, on_disk.stat().st_ino, inside)


def symbolize_in_container(proc: Path, mapping: Mapping, pie: Path, base: int) -> list[str]:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root=str(proc), debug_roots=("/usr/lib/debug",))
    symbolizer.pin_process(4242, [mapping])
    functions = {f.name: f.value for f in readelf_functions(pie)}
    result = symbolizer.symbolize_user(4242, [mapping], [base + functions[name] + 1 for name in HF_FUNCTIONS[:3]])
    return [s.frames[0].function for s in result]


def test_debug_file_inside_the_process_root_is_found(
    fake_proc: tuple[Path, Path], binaries: Binaries, debug_variants: DebugVariants
) -> None:
    proc, root = fake_proc
    # GIVEN a container process mapping /usr/bin/app (stripped) whose image has the debug file
    # at /usr/lib/debug/.build-id/xx/yyyy.debug, where the host has none
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy(debug_variants.stripped, root / "usr" / "bin" / "app")
    inside = build_id_path(root / "usr" / "lib" / "debug", debug_variants.stripped)
    inside.parent.mkdir(parents=True)
    shutil.copy(debug_variants.debug, inside)
    base = 0x555555554000
    mapping = text_mapping(binaries.pie, root / "usr" / "bin" / "app", "/usr/bin/app", base)
    # WHEN its frames are symbolized THEN they are named from the container's debug file
    assert symbolize_in_container(proc, mapping, binaries.pie, base) == list(HF_FUNCTIONS[:3])


def test_debug_symlink_in_a_process_root_cannot_reach_the_host(
    fake_proc: tuple[Path, Path], tmp_path: Path, binaries: Binaries, debug_variants: DebugVariants
) -> None:
    proc, root = fake_proc
    # GIVEN a container whose build-id entry is an absolute symlink to a host path holding
    # the right debug file (and a debug link beside the binary climbing out with ../)
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy(debug_variants.linked, root / "usr" / "bin" / "app")
    host_copy = tmp_path / "host" / "pie.debug"
    host_copy.parent.mkdir()
    shutil.copy(debug_variants.debug, host_copy)
    entry = build_id_path(root / "usr" / "lib" / "debug", debug_variants.linked)
    entry.parent.mkdir(parents=True)
    entry.symlink_to(host_copy)
    (root / "usr" / "bin" / "pie.debug").symlink_to("../../../../../../../../" + str(host_copy))
    base = 0x555555554000
    mapping = text_mapping(binaries.pie, root / "usr" / "bin" / "app", "/usr/bin/app", base)
    # WHEN symbolized THEN neither link leads out of the root: the frames stay unnamed
    names = symbolize_in_container(proc, mapping, binaries.pie, base)
    assert all(name.startswith("app+0x") for name in names), names


# ----- the real libc and ld.so (libc6-dbg) -----------------------------------------------------


def debian_debug_file(binary: Path) -> Path:
    hexid = readelf_build_id(binary).hex()
    return Path("/usr/lib/debug/.build-id") / hexid[:2] / f"{hexid[2:]}.debug"


def runtime_addr(mappings: list[Mapping], binary: Path, elf_vaddr: int) -> int:
    """Runtime address of ``elf_vaddr`` of ``binary`` in a process, from readelf and its maps."""
    segment = next(h for h in readelf_loads(binary) if h.elf_vaddr <= elf_vaddr < h.elf_vaddr + h.filesz)
    file_offset = elf_vaddr - segment.elf_vaddr + segment.file_offset
    for mapping in mappings:
        span = mapping.end - mapping.start
        if mapping.path == str(binary) and mapping.file_offset <= file_offset < mapping.file_offset + span:
            return mapping.start + file_offset - mapping.file_offset
    raise AssertionError(f"{binary} {elf_vaddr:#x} is not mapped")


@pytest.mark.parametrize(
    ("soname", "local_function"), [("libc.so.6", "__libc_start_call_main"), ("ld-linux-x86-64.so.2", "_dl_start")]
)
def test_real_libc_and_ld_so_local_functions_are_named_from_libc6_dbg(
    binaries: Binaries, soname: str, local_function: str
) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        library = next((Path(m.path) for m in maps if os.path.basename(m.path) == soname), None)
        if library is None:
            pytest.skip(f"the test program maps no {soname}")
        debug_file = debian_debug_file(library)
        if not debug_file.exists():
            pytest.skip(f"{debug_file} absent (libc6-dbg not installed)")
        # GIVEN the address nm gives a local function in the library's debug file (one the
        # library's own .dynsym lacks), in a running process that maps the library
        nm_lines = [line.split() for line in run("nm", "--defined-only", debug_file).splitlines()]
        value = next(int(f[0], 16) for f in nm_lines if len(f) == 3 and f[2] == local_function)
        assert local_function not in run("nm", "-D", "--defined-only", library).split()
        symbolizer.pin_process(child.pid, maps)
        addr = runtime_addr(maps, library, value + 0x10)
        # WHEN a stack with that return address is symbolized
        result = symbolizer.symbolize_user(child.pid, maps, [child.printed["hf_work"], addr])
    # THEN the frame is named (as bcc names it), and the source was the build-id tree
    assert result[1].frames[0].function == local_function and result[1].named
    assert result[1].module is not None and result[1].module.path == str(library)
    assert symbolizer.stats.debug_files == {DebugSource.BUILD_ID.value: 1}
