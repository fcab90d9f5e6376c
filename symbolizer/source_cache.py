"""Symbolizer stage: DWARF answers and indexes kept on disk between runs, keyed by build-id.

In: a ``CacheDir``, a GNU build-id and a ``StoredSource`` (answers by ``elf_vaddr``, and the
CUs a ``DwarfIndex`` exported). Out: the same again from ``<build-id hex>.dwarf`` - one record
of ``symbolizer.diskcache`` (sizes and CRC32 checked) with the answers, and
``<build-id hex>.dwarfidx`` with the index, each one JSON section - or nothing (absent, stale
or damaged: counted as ``dwarf_<reason>`` / ``dwarfidx_<reason>``). Every field is
type-checked before use: nothing is built from unchecked bytes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from symbolizer.diskcache import CacheDir, CacheMiss, decode_record, encode_record
from symbolizer.dwarf import SourceFrame, StoredCu
from symbolizer.source import Frames, StoredSource

KIND_SOURCE = 3
SOURCE_VERSION = b"dwarf-v2:"  # bump when answers or indexes are built differently
MAX_FILE_SIZE = 512 << 20
MAX_BUILD_ID_SIZE = 64
ANSWERS = ".dwarf"
INDEX = ".dwarfidx"


class SourceDiskCache:
    """Reads and writes ``StoredSource``s in ``cache``: answers in ``<hex>.dwarf`` (read at once),
    the index in ``<hex>.dwarfidx`` (read only when an address misses the answers)."""

    def __init__(self, cache: CacheDir) -> None:
        self.cache = cache

    def read(self, build_id: bytes) -> StoredSource:
        """The answers of ``build_id``; its index comes later, from ``read_index``."""
        rows = self._read(build_id, ANSWERS)
        return StoredSource(_answers(rows) if rows is not None else {})

    def read_index(self, build_id: bytes) -> list[StoredCu]:
        rows = self._read(build_id, INDEX)
        return _cus(rows) if rows is not None else []

    def _read(self, build_id: bytes, suffix: str) -> Any:
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return None
        kind = f"dwarf{suffix.replace('.dwarf', '')}"
        try:
            data = self.cache.read(f"{build_id.hex()}{suffix}", MAX_FILE_SIZE)
            sections = decode_record(data, KIND_SOURCE, SOURCE_VERSION + suffix.encode() + build_id)
            if len(sections) != 1:
                raise CacheMiss("corrupt", "wrong sections")
            rows = _json(sections[0])
        except CacheMiss as miss:
            self.cache.count(f"{kind}_{miss.reason}")
            return None
        self.cache.count(f"{kind}_hits")
        return rows

    def write(self, build_id: bytes, stored: StoredSource, index_changed: bool) -> None:
        if not 0 < len(build_id) <= MAX_BUILD_ID_SIZE:
            return
        answers = [[addr, None if frames is None else [list(f) for f in frames]]
                   for addr, frames in stored.answers.items()]
        self._write(build_id, ANSWERS, answers)
        if index_changed:
            self._write(build_id, INDEX, stored.cus)

    def _write(self, build_id: bytes, suffix: str, rows: Any) -> None:
        blob = json.dumps(rows, separators=(",", ":")).encode()
        record = encode_record(KIND_SOURCE, SOURCE_VERSION + suffix.encode() + build_id, [blob])
        if self.cache.write(f"{build_id.hex()}{suffix}", record):
            self.cache.count(f"dwarf{suffix.replace('.dwarf', '')}_writes")


def _json(raw: memoryview) -> Any:
    try:
        return json.loads(bytes(raw))
    except (ValueError, RecursionError) as err:
        raise CacheMiss("corrupt", "not JSON") from err


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise CacheMiss("corrupt", what)


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) for x in value)


def _answers(rows: Any) -> dict[int, Frames]:
    _check(isinstance(rows, list), "answers not a list")
    out: dict[int, Frames] = {}
    for row in rows:
        _check(isinstance(row, list) and len(row) == 2 and isinstance(row[0], int), "bad answer")
        if row[1] is None:
            out[row[0]] = None
            continue
        _check(isinstance(row[1], list), "bad frames")
        frames = []
        for f in row[1]:
            _check(isinstance(f, list) and len(f) == 4 and isinstance(f[0], str) and isinstance(f[1], str)
                   and isinstance(f[2], int) and isinstance(f[3], int), "bad frame")
            frames.append(SourceFrame(sys.intern(f[0]), sys.intern(f[1]), f[2], f[3]))  # one copy per name
        out[row[0]] = tuple(frames)
    return out


def _cus(rows: Any) -> list[StoredCu]:
    _check(isinstance(rows, list), "index not a list")
    for row in rows:
        _check(isinstance(row, list) and len(row) == 7 and isinstance(row[0], int) and isinstance(row[1], str),
               "bad CU")
        _check(isinstance(row[2], list) and all(isinstance(name, str) for name in row[2]), "bad CU files")
        _check(_ints(row[3]) and _ints(row[4]) and _ints(row[5]) and len(row[3]) == len(row[4]) == len(row[5]),
               "bad CU ranges")
        _check(row[3] == sorted(row[3]), "CU ranges not sorted")
        _check(isinstance(row[6], dict) and all(key.isdigit() for key in row[6]), "bad CU trees")
        # each tree is checked by symbolizer.dwarf when first used (most never are)
    return list(rows)
