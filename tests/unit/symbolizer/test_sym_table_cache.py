"""symbolizer.table_cache through the loader and the facade: symbol tables persist on disk by
build-id, are read back without an ELF parse, and a damaged file is never trusted.

Expected names come from readelf on the compiled fixtures and from the programs themselves."""

from __future__ import annotations

import mmap
import os
import shutil
from array import array
from pathlib import Path

import pytest
from sym_build import Binaries, DebugVariants
from sym_helpers import read_maps, readelf_build_id, readelf_functions, run, running

from symbolizer import Symbolizer, loader, table_cache
from symbolizer.debuginfo import DebugLocator
from symbolizer.diskcache import CacheDir, encode_record
from symbolizer.elf import read_elf_info
from symbolizer.errors import Cause, SymbolizerError
from symbolizer.loader import TableLoader
from symbolizer.symtab import SymbolTable
from symbolizer.table_cache import KIND_SYMTAB, TABLE_VERSION, SymtabDiskCache

NOWHERE = "/nonexistent-kallsyms"
NO_DEBUG_ROOT = "/nonexistent-debug-root"
OWN = ("hf_work", "hf_middle", "hf_static_helper")


def make_loader(cache: Path, debug_roots: tuple[str, ...] = (NO_DEBUG_ROOT,)) -> TableLoader:
    return TableLoader(8, DebugLocator(debug_roots), SymtabDiskCache(CacheDir(str(cache), 1 << 30)))


def load_table(tables: TableLoader, binary: Path) -> loader.LoadedTable:
    fd = os.open(binary, os.O_RDONLY)
    try:
        return tables.load(fd, read_elf_info(fd), str(binary))
    finally:
        os.close(fd)


def cache_file(cache: Path, binary: Path) -> Path:
    return cache / f"{readelf_build_id(binary).hex()}.sym"


def refuse_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the ELF symbol tables were parsed")

    monkeypatch.setattr(loader, "build_symbol_table", refuse)


@pytest.mark.parametrize("variant", ["pie", "nopie", "lib"])
def test_a_cached_table_answers_like_the_parsed_one_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binaries: Binaries, variant: str
) -> None:
    binary: Path = getattr(binaries, variant)
    # GIVEN a table parsed once with a cache directory (a first run of the agent)
    first = load_table(make_loader(tmp_path), binary).table
    assert cache_file(tmp_path, binary).exists()
    # WHEN a new loader (a second run) loads the same build-id with parsing forbidden
    refuse_parsing(monkeypatch)
    second_loader = make_loader(tmp_path)
    second = load_table(second_loader, binary)
    # THEN it came from the disk, and every function readelf lists answers as before
    assert second.fresh and second_loader.disk is not None
    assert second_loader.disk.cache.counters == {"symtab_hits": 1}
    assert columns_of(second.table) == columns_of(first)
    for function in readelf_functions(binary):
        assert second.table.lookup(function.value) == first.lookup(function.value)


def test_binary_without_build_id_is_cached_under_its_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binaries: Binaries
) -> None:
    # GIVEN a copy of a binary without a build-id (as Go links), loaded once
    binary = tmp_path / "no-build-id"
    shutil.copy(binaries.no_build_id, binary)
    first = load_table(make_loader(tmp_path / "cache"), binary).table
    st = binary.stat()
    assert os.listdir(tmp_path / "cache") == [f"file-{st.st_dev:x}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}.sym"]
    # WHEN a second run loads it, parsing forbidden THEN it comes from the file, answering alike
    with monkeypatch.context() as patched:
        refuse_parsing(patched)
        second = make_loader(tmp_path / "cache")
        assert columns_of(load_table(second, binary).table) == columns_of(first)
        assert second.disk is not None and second.disk.cache.counters == {"symtab_hits": 1}
    # AND once the file is rebuilt (its mtime changes) it is parsed again, under a new name
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = make_loader(tmp_path / "cache")
    load_table(third, binary)
    assert third.disk is not None and third.disk.cache.counters == {"symtab_absent": 1, "symtab_writes": 1}
    assert len(os.listdir(tmp_path / "cache")) == 2


def damage_file(path: Path, how: str) -> None:
    """Replace ``path`` with a damaged copy (a new file, as every writer replaces cache files:
    tables map theirs, so one rewritten in place would change under them)."""
    data = path.read_bytes()
    if how == "truncate":
        data = data[: len(data) - 9]
    elif how == "flip":
        data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    elif how == "empty":
        data = b""
    else:
        data = b"\0" * len(data)
    path.with_suffix(".damaged").write_bytes(data)
    path.with_suffix(".damaged").replace(path)


def columns_of(table: SymbolTable) -> list[bytes]:
    return [bytes(column) for column in table.columns()]


@pytest.mark.parametrize("how", ["truncate", "flip", "empty", "zeros"])
def test_damaged_cache_file_is_ignored_and_rewritten(tmp_path: Path, binaries: Binaries, how: str) -> None:
    # GIVEN a cache file of the program, then damaged
    good = columns_of(load_table(make_loader(tmp_path), binaries.pie).table)
    path = cache_file(tmp_path, binaries.pie)
    written = path.read_bytes()
    damage_file(path, how)
    # WHEN a new loader loads the program
    tables = make_loader(tmp_path)
    table = load_table(tables, binaries.pie).table
    # THEN the damage was noticed, the table parsed again (same answers) and the file rewritten
    assert tables.disk is not None and tables.disk.cache.counters == {"symtab_corrupt": 1, "symtab_writes": 1}
    assert columns_of(table) == good
    assert path.read_bytes() == written


def offsets(*values: int) -> bytes:
    return array("Q", values).tobytes()


@pytest.mark.parametrize(
    "sections",
    [
        [b"\1", b"\0" * 16, b"\0" * 8, offsets(0, 1), b"a"],  # arrays of different lengths
        [b"\1", b"\0" * 8, b"\0" * 8, offsets(0, 5), b"ab"],  # the last name offset past the blob
        [b"\1", b"\0" * 8, b"\0" * 8, offsets(0, 2), b"abc"],  # names past the last offset
        [b"\1", b"\0" * 8, b"\0" * 8, offsets(1, 2), b"ab"],  # the first name offset not 0
        [b"\1", b"\0" * 8, b"\0" * 8, offsets(0), b""],  # as many offsets as symbols
        [b"\1", b"\0" * 7, b"\0" * 8, offsets(0, 1), b"a"],  # an array of 7 bytes
        [b"\1\1", b"\0" * 8, b"\0" * 8, offsets(0, 1), b"a"],  # a flag of 2 bytes
        [b"\1", b"\0" * 8],  # sections missing
    ],
)
def test_well_framed_record_with_inconsistent_arrays_is_refused(
    tmp_path: Path, binaries: Binaries, sections: list[bytes]
) -> None:
    # GIVEN a record with a valid header, key and CRC32 but arrays that do not fit together
    build_id = readelf_build_id(binaries.pie)
    cache = CacheDir(str(tmp_path), 1 << 30)
    assert cache.write(f"{build_id.hex()}.sym", encode_record(KIND_SYMTAB, TABLE_VERSION + build_id, sections))
    # WHEN read THEN it is refused as corrupt, and a load parses the binary instead
    assert SymtabDiskCache(cache).read(build_id) is None
    assert cache.counters["symtab_corrupt"] == 1
    assert (
        load_table(make_loader(tmp_path), binaries.pie).table.lookup(
            next(f.value for f in readelf_functions(binaries.pie) if f.name == "hf_work")
        )
        == "hf_work"
    )


def test_a_new_table_version_makes_old_files_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binaries: Binaries
) -> None:
    load_table(make_loader(tmp_path), binaries.pie)
    monkeypatch.setattr(table_cache, "TABLE_VERSION", b"symtab-v999:")
    tables = make_loader(tmp_path)
    load_table(tables, binaries.pie)
    assert tables.disk is not None and tables.disk.cache.counters == {"symtab_stale": 1, "symtab_writes": 1}


def test_incomplete_cached_table_is_completed_once_a_debug_file_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binaries: Binaries, debug_variants: DebugVariants
) -> None:
    static = next(f.value for f in readelf_functions(binaries.pie) if f.name == "hf_static_helper")
    debug_root = tmp_path / "debug"
    # GIVEN a stripped binary cached while it had no debug file (its table lacks hf_static_helper)
    assert (
        load_table(make_loader(tmp_path / "cache", (str(debug_root),)), debug_variants.stripped).table.lookup(static)
        is None
    )
    # WHEN its debug file is installed in the build-id tree and a new run loads it
    hexid = readelf_build_id(debug_variants.stripped).hex()
    target = debug_root / ".build-id" / hexid[:2] / f"{hexid[2:]}.debug"
    target.parent.mkdir(parents=True)
    shutil.copy(debug_variants.debug, target)
    second = make_loader(tmp_path / "cache", (str(debug_root),))
    # THEN the debug file completes it, and the cache is rewritten as complete
    assert load_table(second, debug_variants.stripped).table.lookup(static) == "hf_static_helper"
    assert second.debug_files == {"build_id": 1}
    assert second.disk is not None and second.disk.cache.counters == {"symtab_hits": 1, "symtab_writes": 1}
    # AND a third run takes the complete table from the disk without looking for debug files
    third = make_loader(tmp_path / "cache", (str(debug_root),))

    def no_lookup(*_args: object) -> None:
        raise AssertionError("debug files were looked up for a complete cached table")

    monkeypatch.setattr(third.locator, "find", no_lookup)
    refuse_parsing(monkeypatch)
    assert load_table(third, debug_variants.stripped).table.lookup(static) == "hf_static_helper"


def test_cache_stays_within_its_byte_bound(tmp_path: Path, binaries: Binaries) -> None:
    # GIVEN a cache bound to a little more than one table file
    sizes = []
    for binary in (binaries.pie, binaries.nopie, binaries.lib):
        probe = tmp_path / "probe"
        load_table(make_loader(probe), binary)
        sizes.append(cache_file(probe, binary).stat().st_size)
        shutil.rmtree(probe)
    bound = max(sizes) + 16
    tables = TableLoader(8, DebugLocator((NO_DEBUG_ROOT,)), SymtabDiskCache(CacheDir(str(tmp_path / "c"), bound)))
    # WHEN three binaries' tables are written
    for binary in (binaries.pie, binaries.nopie, binaries.lib):
        load_table(tables, binary)
    # THEN the older ones were evicted, the newest stays, and the total is within the bound
    files = list((tmp_path / "c").iterdir())
    assert sum(f.stat().st_size for f in files) <= bound
    assert cache_file(tmp_path / "c", binaries.lib) in files
    assert tables.disk is not None and tables.disk.cache.counters.get("evicted", 0) == 2


def test_second_symbolizer_names_a_running_program_from_the_disk_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binaries: Binaries
) -> None:
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        stack = [child.printed[name] + 1 for name in OWN] + [child.printed["getpid"] + 1]
        # GIVEN a first Symbolizer (a first run) that named the program and libc
        first = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(tmp_path))
        first.pin_process(child.pid, maps)
        expected = [s.frames[0].function for s in first.symbolize_user(child.pid, maps, stack)]
        assert expected[:3] == list(OWN)
        # WHEN a second Symbolizer with the same cache directory names them, parsing forbidden
        refuse_parsing(monkeypatch)
        second = Symbolizer(kallsyms_path=NOWHERE, cache_dir=str(tmp_path))
        second.pin_process(child.pid, maps)
        result = second.symbolize_user(child.pid, maps, stack)
    # THEN every frame is named as before, from the disk (program and libc at least)
    assert [s.frames[0].function for s in result] == expected
    assert second.stats.disk_cache.get("symtab_hits", 0) >= 2
    assert second.stats.binaries_failed == {}


def test_symbolizer_without_cache_dir_writes_nothing(tmp_path: Path, binaries: Binaries) -> None:
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        symbolizer = Symbolizer(kallsyms_path=NOWHERE)
        symbolizer.symbolize_user(child.pid, maps, [child.printed["hf_work"]])
    assert symbolizer.stats.disk_cache == {}


def test_loader_still_raises_for_the_binarys_own_faults(tmp_path: Path, binaries: Binaries) -> None:
    # GIVEN a binary truncated, after its headers were read, in the middle of its .dynsym
    data = binaries.rdynamic.read_bytes()
    info_fd = os.open(binaries.rdynamic, os.O_RDONLY)
    try:
        info = read_elf_info(info_fd)
    finally:
        os.close(info_fd)
    dynsym = next(s for s in info.symbol_sources if s.dynamic)
    cut = tmp_path / "cut"
    cut.write_bytes(data[: dynsym.offset + 8])
    fd = os.open(cut, os.O_RDONLY)
    try:
        # WHEN its table is loaded THEN the binary's fault is raised (the facade counts it)
        with pytest.raises(SymbolizerError) as err:
            make_loader(tmp_path / "cache").load(fd, info, str(cut))
    finally:
        os.close(fd)
    assert err.value.cause is Cause.BAD_ELF


REAL_BINARIES = [Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"),
                 Path("/usr/bin/python3.11")]


@pytest.mark.parametrize("binary", REAL_BINARIES, ids=lambda p: p.name)
def test_a_mapped_table_answers_like_the_built_one_on_real_binaries(tmp_path: Path, binary: Path) -> None:
    # GIVEN a distribution binary's table as built in memory, and as the loader keeps it after
    # writing it to the disk cache
    fd = os.open(binary, os.O_RDONLY)
    try:
        info = read_elf_info(fd)
        built, _ = make_loader(tmp_path).build(fd, info, str(binary))
        kept = make_loader(tmp_path).load(fd, info, str(binary)).table
    finally:
        os.close(fd)
    # THEN the kept one is views of the mapped cache file, not a copy on the heap
    assert all(isinstance(column, memoryview) and isinstance(column.obj, mmap.mmap) for column in kept.columns())
    # AND it answers every lookup as the built one: each function readelf lists, at its first
    # and last byte, one past its end and one before its start
    functions = readelf_functions(binary, dynamic=True) + readelf_functions(binary)
    assert len(functions) > 1000
    probes = sorted({a for f in functions for a in (f.value, f.value + max(f.size, 1) - 1, f.value + f.size,
                                                     f.value - 1)})
    for probe in probes:
        assert kept.lookup(probe) == built.lookup(probe), hex(probe)
        assert kept.lookup_start(probe) == built.lookup_start(probe), hex(probe)
        assert kept.nearest(probe) == built.nearest(probe), hex(probe)
    assert columns_of(kept) == columns_of(built)


def test_names_of_data_symbols_are_not_kept(binaries: Binaries) -> None:
    # GIVEN the fixture program, whose symbol table also names objects and sections (readelf)
    objects = [line.split()[7] for line in run("readelf", "-W", "--syms", binaries.pie).splitlines()
               if len(line.split()) >= 8 and line.split()[3] == "OBJECT"]
    assert objects
    fd = os.open(binaries.pie, os.O_RDONLY)
    try:
        table = make_loader(Path("/nonexistent-cache")).build(fd, read_elf_info(fd), str(binaries.pie))[0]
    finally:
        os.close(fd)
    # THEN the table's names are its functions' names back to back, nothing else
    names = bytes(table.columns()[3])
    functions = {f.name for f in readelf_functions(binaries.pie)}
    assert len(names) == sum(len(name.encode()) for name in functions)
    assert all(name.encode() not in names for name in objects if name not in functions and len(name) > 6)
