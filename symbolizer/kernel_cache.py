"""Symbolizer stage: the parsed kallsyms table kept on disk between runs of the agent.

In: a ``CacheDir``, the kallsyms path and the proc root. Out: a ``KallsymsTable`` - read from
the cache file when its key still holds, else parsed from kallsyms and written back.

Key: SHA-256 of the kallsyms path, the boot id (``/proc/sys/kernel/random/boot_id``) and
/proc/modules without its use-count and users columns (they change without any symbol moving):
a reboot or a module (un)load invalidates it. Without a readable boot id nothing is cached.
Only the core kernel's symbols and those of modules in /proc/modules are stored with names:
BPF programs, ftrace trampolines and kprobe slots come and go without changing the key, so
they are kept only as unnamed boundaries (an address in them stays ``[kernel] 0x...`` rather
than borrowing the name of the module function before it); names for them come only from a
fresh parse. A table read by an unprivileged reader (every address
0) is never stored. The file is validated (sizes, CRC32, indexes) before a table is built.
A table read from the cache is views of the file mapped read-only (``diskcache.map_record``):
only the pages lookups touch are resident, not the whole table (~5 MB on a distribution kernel).
"""

from __future__ import annotations

import logging
from array import array

from symbolizer.diskcache import CacheDir, CacheMiss, encode_record, int_column, map_record
from symbolizer.kallsyms import KallsymsTable, load_kallsyms
from symbolizer.kallsyms_parse import KallsymsColumns

try:  # CPython's own SHA-256: hashlib would load OpenSSL's libcrypto (~3.5 MB resident) for one digest
    from _sha256 import sha256
except ImportError:  # an interpreter built without it
    from hashlib import sha256

log = logging.getLogger(__name__)

KIND_KALLSYMS = 1
FILE_NAME = "kallsyms.bin"
MAX_FILE_SIZE = 1 << 30
MAX_SMALL_FILE = 1 << 20  # boot_id, /proc/modules


def _read_small(path: str) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read(MAX_SMALL_FILE)
    except OSError:
        return None


def cache_key(kallsyms_path: str, proc_root: str) -> tuple[bytes, set[str]] | None:
    """(key, names of the loaded modules), or None when the boot id cannot be read."""
    boot_id = _read_small(f"{proc_root}/sys/kernel/random/boot_id")
    if not boot_id or not boot_id.strip():
        return None
    modules = _read_small(f"{proc_root}/modules") or b""
    digest = sha256()
    digest.update(kallsyms_path.encode("utf-8", "surrogateescape") + b"\0" + boot_id.strip() + b"\0")
    names = set()
    for line in modules.splitlines():
        fields = line.split()
        if len(fields) >= 6:  # name size use-count users state address [taint]
            names.add(fields[0].decode("utf-8", "replace"))
            digest.update(b" ".join((fields[0], fields[1], *fields[4:])) + b"\n")
    return digest.digest(), names


def encode_table(table: KallsymsTable) -> list[bytes | memoryview]:
    columns = table.columns
    return [
        memoryview(columns.addrs).cast("B"),
        columns.is_text,
        columns.names,
        memoryview(columns.name_offsets).cast("B"),
        memoryview(columns.module_index).cast("B"),
        "\0".join(columns.module_names).encode("utf-8", "replace"),
        memoryview(array("Q", columns.module_starts)).cast("B"),
        memoryview(array("Q", columns.module_ends)).cast("B"),
    ]


def decode_table(sections: list[memoryview]) -> KallsymsTable:
    """The table in a record's sections; ``CacheMiss("corrupt")`` unless every size agrees.

    Values are not checked one by one: a module index out of range names nothing (see
    ``KallsymsTable.lookup``), and offsets out of order only garble names; the CRC32 has
    already ruled out accidental damage."""
    if len(sections) != 8:
        raise CacheMiss("corrupt", "wrong section count")
    addrs = int_column(sections[0])
    offsets = int_column(sections[3])
    module_index = int_column(sections[4], "I")
    names = sections[2]
    module_names = bytes(sections[5]).decode("utf-8", "replace").split("\0")
    starts, ends = int_column(sections[6]), int_column(sections[7])
    count = len(addrs)
    if len(sections[1]) != count or len(offsets) != count + 1 or len(module_index) != count:
        raise CacheMiss("corrupt", "column lengths differ")
    if offsets[0] != 0 or offsets[-1] != len(names) or len(starts) != len(module_names) or len(ends) != len(starts):
        raise CacheMiss("corrupt", "names or module ranges do not fit")
    columns = KallsymsColumns(
        addrs, sections[1], names, offsets, module_index, module_names, list(starts), list(ends)
    )
    return KallsymsTable(columns)


class KallsymsCache:
    """Loads kallsyms through a cache file in ``cache``; counters in ``cache.counters``."""

    def __init__(self, cache: CacheDir, kallsyms_path: str, proc_root: str) -> None:
        self._cache = cache
        self._kallsyms_path = kallsyms_path
        self._proc_root = proc_root

    def load(self) -> KallsymsTable:
        """The table; raises ``SymbolizerError`` only when kallsyms itself cannot be read."""
        keyed = cache_key(self._kallsyms_path, self._proc_root)
        if keyed is None:
            return load_kallsyms(self._kallsyms_path)
        key, modules = keyed
        try:
            table = decode_table(map_record(self._cache, FILE_NAME, MAX_FILE_SIZE, KIND_KALLSYMS, key))
        except CacheMiss as miss:
            self._cache.count(f"kallsyms_{miss.reason}")
            if miss.reason != "absent":
                log.debug("kallsyms cache not used: %s", miss)
        else:
            self._cache.count("kallsyms_hits")
            return table
        table = load_kallsyms(self._kallsyms_path)
        if not table.restricted:
            record = encode_record(KIND_KALLSYMS, key, encode_table(table.keep_modules(modules)))
            if self._cache.write(FILE_NAME, record):
                self._cache.count("kallsyms_writes")
        return table
