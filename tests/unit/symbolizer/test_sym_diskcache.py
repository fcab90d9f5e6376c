"""symbolizer.diskcache: the record format never trusts a damaged file, and the directory
stays under its size bound, evicting the least recently used files."""

from __future__ import annotations

import mmap
import os
import stat
from array import array
from pathlib import Path

import pytest

from symbolizer.diskcache import TEMP_PREFIX, CacheDir, CacheMiss, decode_record, encode_record, int_column, map_record

KEY = b"k" * 32
SECTIONS = [b"alpha", b"", bytes(range(256)) * 3, b"z" * 13]


def test_record_round_trips() -> None:
    record = encode_record(7, KEY, SECTIONS)
    assert [bytes(s) for s in decode_record(record, 7, KEY)] == SECTIONS


def test_every_truncation_is_a_miss_never_another_exception() -> None:
    # GIVEN a valid record WHEN cut at every length THEN each cut is refused as a CacheMiss
    record = encode_record(7, KEY, SECTIONS)
    for cut in range(len(record)):
        with pytest.raises(CacheMiss) as miss:
            decode_record(record[:cut], 7, KEY)
        assert miss.value.reason in ("corrupt", "stale"), cut


def test_any_flipped_byte_is_refused() -> None:
    # GIVEN a valid record WHEN any single byte is altered THEN it is refused (size, key,
    # header or CRC32), never returned
    record = encode_record(7, KEY, SECTIONS)
    for at in range(len(record)):
        damaged = bytearray(record)
        damaged[at] ^= 0x40
        with pytest.raises(CacheMiss):
            decode_record(bytes(damaged), 7, KEY)
    with pytest.raises(CacheMiss):
        decode_record(record + b"\0" * 8, 7, KEY)  # appended bytes


def test_other_key_or_kind_is_stale() -> None:
    record = encode_record(7, KEY, SECTIONS)
    for kind, key in ((8, KEY), (7, b"other")):
        with pytest.raises(CacheMiss) as miss:
            decode_record(record, kind, key)
        assert miss.value.reason == "stale"


def test_write_is_atomic_private_and_read_back(tmp_path: Path) -> None:
    # GIVEN a cache directory that does not exist yet (nor its parent)
    cache = CacheDir(str(tmp_path / "a" / "b"), 1 << 20)
    # WHEN a file is written and read
    assert cache.write("entry", b"payload")
    # THEN it reads back, the directories are 0700, the file 0600, no temporary file is left
    assert cache.read("entry", 100) == b"payload"
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "entry").stat().st_mode) == 0o600
    assert os.listdir(tmp_path / "a" / "b") == ["entry"]


def test_read_refuses_symlinks_and_oversized_files(tmp_path: Path) -> None:
    cache = CacheDir(str(tmp_path), 1 << 20)
    (tmp_path / "secret").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(CacheMiss) as link:
        cache.read("link", 100)
    assert link.value.reason == "absent"
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(CacheMiss) as big:
        cache.read("big", 100)
    assert big.value.reason == "corrupt"


def test_least_recently_used_files_are_evicted_beyond_the_bound(tmp_path: Path) -> None:
    # GIVEN a 300-byte cache holding three 100-byte files, "b" read most recently
    cache = CacheDir(str(tmp_path), 300)
    for age, name in enumerate(("a", "b", "c")):
        (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(tmp_path / name, (1000 + age, 1000 + age))
    cache.read("a", 1000)  # touched now: the most recent of all
    # WHEN a fourth file is written
    assert cache.write("d", b"y" * 100)
    # THEN the least recently used one ("b") is gone and the total is within the bound
    assert sorted(os.listdir(tmp_path)) == ["a", "c", "d"]
    assert cache.counters == {"evicted": 1}
    # AND later writes keep it bounded without rescanning from scratch
    assert cache.write("e", b"z" * 150)
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 300
    assert "e" in os.listdir(tmp_path)


def test_file_larger_than_the_bound_is_not_written(tmp_path: Path) -> None:
    cache = CacheDir(str(tmp_path), 10)
    assert not cache.write("big", b"x" * 11)
    assert cache.counters == {"too_large": 1}
    assert os.listdir(tmp_path) == []


def test_stale_temporary_files_are_removed_when_bounding(tmp_path: Path) -> None:
    # GIVEN a temporary file a crashed writer left an hour ago, in a full cache
    leftover = tmp_path / f"{TEMP_PREFIX}crashed"
    leftover.write_bytes(b"x" * 50)
    os.utime(leftover, (1, 1))
    cache = CacheDir(str(tmp_path), 60)
    # WHEN a file is written THEN the leftover is deleted
    assert cache.write("new", b"y" * 20)
    assert os.listdir(tmp_path) == ["new"]


def test_unwritable_directory_is_counted_not_raised(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    cache = CacheDir(str(tmp_path / "file" / "sub"), 100)  # a regular file where a dir should be
    assert not cache.write("x", b"data")
    assert cache.counters == {"write_errors": 1}


def test_mapped_record_round_trips_as_views_of_the_file(tmp_path: Path) -> None:
    # GIVEN a record written to a cache directory
    cache = CacheDir(str(tmp_path), 1 << 20)
    assert cache.write("entry", encode_record(7, KEY, SECTIONS))
    # WHEN it is mapped back THEN its sections are the same bytes, read through a file mapping
    sections = map_record(cache, "entry", 1 << 20, 7, KEY)
    assert [bytes(s) for s in sections] == SECTIONS
    assert all(isinstance(s.obj, mmap.mmap) for s in sections)
    # AND a 64-bit column of it reads as integers; a section of another size is refused
    assert list(int_column(memoryview(array("Q", [3, 1 << 63]).tobytes()))) == [3, 1 << 63]
    with pytest.raises(CacheMiss):
        int_column(sections[0])


@pytest.mark.parametrize("content", [b"", b"not a record", "truncated"])
def test_mapping_a_damaged_or_empty_file_is_a_miss(tmp_path: Path, content: bytes | str) -> None:
    cache = CacheDir(str(tmp_path), 1 << 20)
    data = encode_record(7, KEY, SECTIONS)[:-3] if content == "truncated" else content
    (tmp_path / "entry").write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(CacheMiss) as miss:
        map_record(cache, "entry", 1 << 20, 7, KEY)
    assert miss.value.reason == "corrupt"
    with pytest.raises(CacheMiss) as absent:
        map_record(cache, "missing", 1 << 20, 7, KEY)
    assert absent.value.reason == "absent"


def resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, current = 0, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            current = fields[5] if len(fields) > 5 else ""
        elif fields[:1] == ["Rss:"] and current == str(path):
            total += int(fields[1])
    return total


def test_pages_of_mapped_files_are_released_after_the_check_and_on_request(tmp_path: Path) -> None:
    # GIVEN a 4 MiB record mapped back (its CRC32 check read every page)
    cache = CacheDir(str(tmp_path), 1 << 30)
    assert cache.write("entry", encode_record(7, KEY, [os.urandom(4 << 20)]))
    (section,) = map_record(cache, "entry", 1 << 30, 7, KEY)
    # THEN none of its pages is resident in this process any more
    assert resident_kb(tmp_path / "entry") == 0
    # WHEN lookups touch pages all over it THEN those are resident, until release_pages
    assert sum(section[at] for at in range(0, len(section), 1 << 16)) >= 0
    assert resident_kb(tmp_path / "entry") > 0
    cache.release_pages()
    assert resident_kb(tmp_path / "entry") == 0
    assert len(bytes(section)) == 4 << 20  # still readable: the page cache maps them back
