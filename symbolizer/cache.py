"""Symbolizer stage: bounded caches of parsed binaries.

In: a parsed value and its key. Out: the value again on a later ``get``, until it is the least
recently used of more than ``capacity`` entries.

``table_key`` names a binary's content: its GNU build-id when it has one (so the same libc
seen through different paths, inodes or containers is parsed once), else the file's
(dev, inode, size, mtime) - enough to notice a rebuilt file at the same path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

TableKey = bytes | tuple[int, int, int, int]


def table_key(build_id: bytes, identity: tuple[int, int, int, int]) -> TableKey:
    """Cache key of a binary: its build-id, or (st_dev, st_ino, st_size, st_mtime_ns) without one."""
    return build_id if build_id else identity


def key_name(key: TableKey) -> str:
    """``key`` as a file name stem in a disk cache: the build-id in hex, else "file-" and the
    identity's numbers in hex."""
    return key.hex() if isinstance(key, bytes) else "file-" + "-".join(f"{n:x}" for n in key)


class LruCache(Generic[K, V]):
    """A dict bounded to ``capacity`` entries, evicting the least recently used.

    ``on_evict`` (if given) is called with each evicted key and value, e.g. to close an fd.
    """

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._on_evict = on_evict
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None; counts hits and misses."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value for ``key`` without touching recency or counters."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Store ``value`` as the most recently used; evict the oldest beyond capacity."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            old_key, old_value = self._entries.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(old_key, old_value)

    def pop(self, key: K) -> V | None:
        """Remove ``key`` without calling ``on_evict``; return its value or None."""
        return self._entries.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the entries, least recently used first."""
        return list(self._entries.items())
