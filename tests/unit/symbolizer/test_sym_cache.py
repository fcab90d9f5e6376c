"""symbolizer.cache: the bounded LRU and the table key."""

from __future__ import annotations

import pytest

from symbolizer.cache import LruCache, table_key


def test_least_recently_used_is_evicted_and_reported() -> None:
    # GIVEN a cache of 2 with an eviction callback
    evicted: list[tuple[str, int]] = []
    cache: LruCache[str, int] = LruCache(2, lambda k, v: evicted.append((k, v)))
    cache.put("a", 1)
    cache.put("b", 2)
    # WHEN "a" is used, then a third entry arrives
    assert cache.get("a") == 1
    cache.put("c", 3)
    # THEN "b" (least recently used) is evicted through the callback
    assert evicted == [("b", 2)]
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert (cache.hits, cache.misses) == (3, 0)
    assert cache.get("b") is None and cache.misses == 1


def test_peek_and_pop_do_not_touch_order_or_callback() -> None:
    evicted: list[str] = []
    cache: LruCache[str, int] = LruCache(2, lambda k, _v: evicted.append(k))
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    cache.put("c", 3)  # "a" was only peeked: still the oldest
    assert evicted == ["a"]
    assert cache.pop("b") == 2 and evicted == ["a"] and len(cache) == 1
    assert (cache.hits, cache.misses) == (0, 0)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LruCache[str, int](0)


def test_table_key_prefers_build_id() -> None:
    identity = (1, 2, 3, 4)
    assert table_key(b"\x01\x02", identity) == b"\x01\x02"
    assert table_key(b"", identity) == identity
