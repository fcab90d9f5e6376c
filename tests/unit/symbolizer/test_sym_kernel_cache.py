"""symbolizer.kernel_cache through the facade: kernel symbols persist across Symbolizers,
keyed by boot id and /proc/modules, in a fake /proc (boot_id, modules) and a canned kallsyms."""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

import pytest

from symbolizer import Symbolizer
from symbolizer.diskcache import CacheDir
from symbolizer.kallsyms import load_kallsyms
from symbolizer.kernel_cache import FILE_NAME, KallsymsCache

# Core sorted, one loaded module (in /proc/modules below), one BPF program (not a module).
KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 T hf_kernel_alpha
ffffffff81002000 t hf_kernel_beta
ffffffff81003000 D hf_kernel_data
ffffffffc0a00000 t hf_mod_init\t[hfmod]
ffffffffc0a00100 T hf_mod_work\t[hfmod]
ffffffffc0b00000 t bpf_prog_6deef7357e7b4530_hf_prog\t[bpf]
"""
MODULES = "hfmod 16384 0 - Live 0xffffffffc0a00000\n"
STACK = [0xFFFFFFFF81001010, 0xFFFFFFFFC0A00110]
NAMES = ["hf_kernel_alpha", "hf_mod_work"]
BPF_ADDR = 0xFFFFFFFFC0B00010


class Host:
    """A fake /proc with boot_id and modules, a canned kallsyms and a cache directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = tmp_path / "proc"
        (self.proc / "sys" / "kernel" / "random").mkdir(parents=True)
        self.boot_id = self.proc / "sys" / "kernel" / "random" / "boot_id"
        self.boot_id.write_text("0e7c9b7e-0000-4000-8000-000000000001\n")
        self.modules = self.proc / "modules"
        self.modules.write_text(MODULES)
        self.kallsyms = tmp_path / "kallsyms"
        self.kallsyms.write_text(KALLSYMS)
        self.cache = tmp_path / "cache"
        self.cache_file = self.cache / "kernel" / FILE_NAME

    def symbolizer(self) -> Symbolizer:
        return Symbolizer(
            kallsyms_path=str(self.kallsyms),
            proc_root=str(self.proc),
            kernel_notes_path="/nonexistent",
            cache_dir=str(self.cache),
        )


def kernel_names(symbolizer: Symbolizer, addrs: list[int]) -> list[str]:
    return [s.frames[0].function for s in symbolizer.symbolize_kernel(addrs)]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_second_run_reads_the_cache_not_kallsyms(host: Host) -> None:
    # GIVEN a first Symbolizer that loaded kallsyms with a cache directory
    first = host.symbolizer()
    assert kernel_names(first, STACK) == NAMES
    assert first.stats.disk_cache == {"kallsyms_absent": 1, "kallsyms_writes": 1}
    # WHEN kallsyms disappears and a second Symbolizer (a new agent run, same boot) loads
    host.kallsyms.unlink()
    second = host.symbolizer()
    # THEN it still names the core and module frames, from the cache
    assert kernel_names(second, STACK) == NAMES
    assert second.stats.disk_cache == {"kallsyms_hits": 1}
    assert second.stats.binaries_failed == {}
    # AND the cache is private (kernel addresses are secrets)
    assert stat.S_IMODE(host.cache_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.cache_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(host.cache.stat().st_mode) == 0o700


def test_bpf_symbols_are_not_cached(host: Host) -> None:
    # GIVEN a fresh parse names the BPF program
    assert kernel_names(host.symbolizer(), [BPF_ADDR]) == ["bpf_prog_6deef7357e7b4530_hf_prog"]
    # WHEN the next run loads from the cache THEN the BPF program (not in /proc/modules: it
    # may be gone or replaced by now) is unnamed, while the module keeps its names
    host.kallsyms.unlink()
    second = host.symbolizer()
    assert kernel_names(second, [BPF_ADDR, STACK[1]]) == [f"[kernel] 0x{BPF_ADDR:x}", "hf_mod_work"]


@pytest.mark.parametrize(
    ("change", "reparsed"),
    [
        ("reboot", True),
        ("module_loaded", True),
        ("module_reloaded_elsewhere", True),
        ("use_count_changed", False),
    ],
)
def test_cache_key_follows_boot_and_modules(host: Host, change: str, reparsed: bool) -> None:
    # GIVEN a cache written by a first run
    kernel_names(host.symbolizer(), STACK)
    # WHEN the boot id or /proc/modules change (and kallsyms now has other names)
    if change == "reboot":
        host.boot_id.write_text("0e7c9b7e-0000-4000-8000-000000000002\n")
    elif change == "module_loaded":
        host.modules.write_text(MODULES + "other 8192 0 - Live 0xffffffffc0c00000\n")
    elif change == "module_reloaded_elsewhere":
        host.modules.write_text(MODULES.replace("0xffffffffc0a00000", "0xffffffffc0e00000"))
    else:
        host.modules.write_text(MODULES.replace(" 0 - ", " 3 - "))
    host.kallsyms.write_text(KALLSYMS.replace("hf_kernel_alpha", "hf_kernel_renamed"))
    second = host.symbolizer()
    names = kernel_names(second, STACK)
    # THEN a reboot or a module change reparses kallsyms (and rewrites the cache); a mere
    # use-count change does not invalidate it
    if reparsed:
        assert names == ["hf_kernel_renamed", "hf_mod_work"]
        assert second.stats.disk_cache == {"kallsyms_stale": 1, "kallsyms_writes": 1}
        assert kernel_names(host.symbolizer(), STACK) == ["hf_kernel_renamed", "hf_mod_work"]
    else:
        assert names == NAMES
        assert second.stats.disk_cache == {"kallsyms_hits": 1}


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_cache_is_ignored_and_rewritten(host: Host, damage: str) -> None:
    kernel_names(host.symbolizer(), STACK)
    data = host.cache_file.read_bytes()
    # GIVEN a damaged cache file
    if damage == "truncate":
        host.cache_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        host.cache_file.write_bytes(data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:])
    elif damage == "empty":
        host.cache_file.write_bytes(b"")
    else:
        host.cache_file.write_bytes(os.urandom(len(data)))
    # WHEN a new run loads THEN it parses kallsyms, names correctly, and rewrites the file
    second = host.symbolizer()
    assert kernel_names(second, STACK) == NAMES
    assert second.stats.disk_cache == {"kallsyms_corrupt": 1, "kallsyms_writes": 1}
    assert host.cache_file.read_bytes() == data


def test_restricted_kallsyms_is_never_cached(host: Host) -> None:
    # GIVEN kallsyms read as an unprivileged user sees it (every address 0)
    host.kallsyms.write_text("".join(f"{'0' * 16}{line[16:]}" for line in KALLSYMS.splitlines(keepends=True)))
    # WHEN loaded THEN frames are unnamed and nothing is written
    assert kernel_names(host.symbolizer(), STACK[:1]) == [f"[kernel] 0x{STACK[0]:x}"]
    assert not host.cache_file.exists()


def test_without_a_boot_id_nothing_is_cached(host: Host) -> None:
    host.boot_id.unlink()
    symbolizer = host.symbolizer()
    assert kernel_names(symbolizer, STACK) == NAMES
    assert not host.cache_file.exists()
    assert symbolizer.stats.disk_cache == {}


def test_without_cache_dir_nothing_is_written(host: Host, tmp_path: Path) -> None:
    symbolizer = Symbolizer(kallsyms_path=str(host.kallsyms), proc_root=str(host.proc))
    assert kernel_names(symbolizer, STACK) == NAMES
    assert not host.cache.exists()


@pytest.mark.root
def test_real_kallsyms_from_the_cache_matches_a_fresh_parse_and_is_fast(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("kallsyms shows zero addresses to unprivileged readers")
    # GIVEN the real kallsyms parsed once with a cache directory
    fresh = Symbolizer(cache_dir=str(tmp_path))
    symbols = []
    with open("/proc/kallsyms") as stream:
        for line in stream:
            fields = line.split()
            if len(fields) == 3 and fields[1] in "tT":  # core kernel text (no module column)
                symbols.append(int(fields[0], 16) + 1)
    probes = symbols[:: max(1, len(symbols) // 2000)]
    expected = kernel_names(fresh, probes)
    # WHEN a second Symbolizer loads it
    cached = Symbolizer(cache_dir=str(tmp_path))
    cached.symbolize_kernel([])
    # THEN it came from the cache (kallsyms not parsed again) and names every probe the same way
    assert cached.stats.disk_cache == {"kallsyms_hits": 1}
    assert kernel_names(cached, probes) == expected


@pytest.mark.root
def test_real_kallsyms_from_the_cache_is_a_mapping_naming_every_text_symbol_alike(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("kallsyms shows zero addresses to unprivileged readers")
    # GIVEN the real kallsyms parsed (a first run) and read back from the cache (a second run)
    fresh = load_kallsyms("/proc/kallsyms")
    Symbolizer(cache_dir=str(tmp_path)).symbolize_kernel([0])
    cached = KallsymsCache(CacheDir(str(tmp_path / "kernel"), 1 << 30), "/proc/kallsyms", "/proc").load()
    # THEN the second table's columns are views of the mapped cache file, not heap copies
    columns = cached.columns
    for column in (columns.addrs, columns.is_text, columns.names, columns.name_offsets, columns.module_index):
        assert isinstance(column, memoryview) and isinstance(column.obj, mmap.mmap)
    # AND every core-kernel text symbol kallsyms lists (its first byte and the one before the
    # next symbol) is named the same way as by the fresh parse
    starts = []
    with open("/proc/kallsyms") as stream:
        for line in stream:
            fields = line.split()
            if len(fields) == 3 and fields[1] in "tT":
                starts.append(int(fields[0], 16))
    assert len(starts) > 10000
    for addr in starts:
        assert cached.lookup(addr) == fresh.lookup(addr), hex(addr)
        assert cached.lookup(addr + 1) == fresh.lookup(addr + 1), hex(addr)
