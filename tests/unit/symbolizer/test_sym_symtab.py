"""symbolizer.symtab: function tables against readelf's symbol listings (compiled fixtures, libc)."""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from sym_build import CFLAGS, Binaries
from sym_helpers import ElfSymbol, nm_address, readelf_functions

from symbolizer.elf import read_elf_info
from symbolizer.symtab import SymbolTable, build_symbol_table

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


def table_of(path: Path) -> SymbolTable:
    fd = os.open(path, os.O_RDONLY)
    try:
        return build_symbol_table(fd, read_elf_info(fd))
    finally:
        os.close(fd)


def names_by_address(symbols: list[ElfSymbol]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = defaultdict(set)
    for symbol in symbols:
        found[symbol.value].add(symbol.name)
    return found


def assert_every_function_is_named(table: SymbolTable, symbols: list[ElfSymbol]) -> None:
    aliases = names_by_address(symbols)
    for symbol in symbols:
        assert table.lookup(symbol.value) in aliases[symbol.value], symbol
        if symbol.size > 0:
            last = symbol.value + symbol.size - 1
            assert table.lookup(last) in aliases[symbol.value] | {
                s.name for s in symbols if s.value <= last < s.value + s.size
            }, symbol


@pytest.mark.parametrize("variant", ["pie", "nopie", "lib", "rdynamic"])
def test_every_symtab_function_is_found_at_its_first_and_last_byte(binaries: Binaries, variant: str) -> None:
    # GIVEN a compiled binary and readelf's list of its defined FUNC symbols
    path: Path = getattr(binaries, variant)
    symbols = readelf_functions(path)
    assert any(s.name == "hf_work" for s in symbols) or variant == "lib"
    # WHEN its table is built
    table = table_of(path)
    # THEN each function's first and last byte map to its name (or an alias at that address)
    assert_every_function_is_named(table, symbols)
    assert len(table) == len(names_by_address(symbols))


def test_stripped_binary_names_exported_functions_from_dynsym_only(binaries: Binaries) -> None:
    # GIVEN a --strip-all binary linked with -rdynamic: only .dynsym remains
    assert readelf_functions(binaries.stripped) == []
    dynamic = readelf_functions(binaries.stripped, dynamic=True)
    assert {"hf_work", "hf_middle"} <= {s.name for s in dynamic}
    # WHEN its table is built
    table = table_of(binaries.stripped)
    # THEN exported functions are named, and the static helper (value from the unstripped
    # copy's nm) is not: it was only in .symtab
    assert_every_function_is_named(table, dynamic)
    helper = nm_address(binaries.rdynamic, "hf_static_helper")
    assert table.lookup(helper) is None


def test_symtab_and_dynsym_are_merged(binaries: Binaries) -> None:
    # GIVEN an unstripped -rdynamic binary: exported functions are in both tables
    table = table_of(binaries.rdynamic)
    # THEN local ones (only .symtab) and exported ones resolve, each address listed once
    assert table.lookup(nm_address(binaries.rdynamic, "hf_static_helper")) == "hf_static_helper"
    assert table.lookup(nm_address(binaries.rdynamic, "hf_work", dynamic=True)) == "hf_work"
    symbols = readelf_functions(binaries.rdynamic) + readelf_functions(binaries.rdynamic, dynamic=True)
    assert len(table) == len(names_by_address(symbols))


def test_libc_dynsym_every_function_found() -> None:
    # GIVEN the system libc (Debian ships it with .dynsym only) and readelf's FUNC/IFUNC list
    symbols = readelf_functions(LIBC, dynamic=True)
    assert len(symbols) > 1000
    # WHEN its table is built; THEN every function and its last byte resolve to it or an alias
    assert_every_function_is_named(table_of(LIBC), symbols)


def test_address_between_sized_functions_is_unnamed() -> None:
    # GIVEN libc functions (per readelf) followed by bytes no .dynsym FUNC covers
    symbols = sorted(readelf_functions(LIBC, dynamic=True), key=lambda s: s.value)
    table = table_of(LIBC)
    gaps = []
    for symbol in symbols:
        end = symbol.value + symbol.size
        if symbol.size and not any(s.value <= end < s.value + max(s.size, 1) for s in symbols):
            gaps.append(end)
        if len(gaps) == 20:
            break
    assert gaps
    # WHEN / THEN the first byte after such a function is unnamed, not given to its neighbour
    assert [table.lookup(gap) for gap in gaps] == [None] * len(gaps)


def test_nothing_below_the_first_function() -> None:
    table = table_of(LIBC)
    first = min(s.value for s in readelf_functions(LIBC, dynamic=True))
    assert table.lookup(first - 1) is None
    assert table.lookup(0) is None


def test_global_name_wins_over_weak_alias(tmp_path: Path) -> None:
    # GIVEN a library where one function has a GLOBAL name and a WEAK alias (readelf shows both)
    source = tmp_path / "alias.c"
    source.write_text(
        "int hf_real_impl(int n) { return n * 3; }\n"
        'int hf_weak_alias(int n) __attribute__((weak, alias("hf_real_impl")));\n'
    )
    lib = tmp_path / "libalias.so"
    subprocess.run(["gcc", *CFLAGS, "-fPIC", "-shared", "-o", str(lib), str(source)], check=True)
    symbols = {s.name: s for s in readelf_functions(lib)}
    assert symbols["hf_real_impl"].value == symbols["hf_weak_alias"].value
    # WHEN / THEN the address is named by the GLOBAL symbol
    assert table_of(lib).lookup(symbols["hf_real_impl"].value) == "hf_real_impl"


def test_size_zero_function_extends_to_the_next_symbol(tmp_path: Path) -> None:
    # GIVEN hand-written assembly with two functions that have no .size
    source = tmp_path / "nosize.s"
    source.write_text(
        ".text\n"
        ".globl hf_asm_one\n.type hf_asm_one, @function\nhf_asm_one:\n" + "nop\n" * 16 + "ret\n"
        ".globl hf_asm_two\n.type hf_asm_two, @function\nhf_asm_two:\n" + "nop\n" * 4 + "ret\n"
    )
    lib = tmp_path / "libnosize.so"
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", str(lib), str(source)], check=True)
    symbols = {s.name: s for s in readelf_functions(lib)}
    one, two = symbols["hf_asm_one"], symbols["hf_asm_two"]
    assert one.size == 0 and two.value == one.value + 17
    # WHEN its table is built
    table = table_of(lib)
    # THEN the size-less function covers the bytes up to the next one
    assert table.lookup(one.value + 16) == "hf_asm_one"
    assert table.lookup(two.value) == "hf_asm_two"
    assert table.lookup_start(one.value + 9) == one.value
