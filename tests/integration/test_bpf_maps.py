"""Plain-syscall map access (agent/bpf_sys.py) on real kernel maps: read-and-delete of one
entry, in one syscall and through the lookup + delete fallback."""

from __future__ import annotations

import os
import struct

import pytest

from agent import bpf_sys

pytestmark = [pytest.mark.bpf, pytest.mark.root]

BPF_MAP_TYPE_HASH = 1


@pytest.mark.parametrize("one_syscall", [True, False])
def test_take_reads_and_deletes_one_entry(one_syscall: bool) -> None:
    # GIVEN a real hash map of three entries
    fd = bpf_sys.map_create(map_type=BPF_MAP_TYPE_HASH, key_size=4, value_size=16, max_entries=8, flags=0,
                            name="hf_test_take")
    try:
        table = bpf_sys.BpfMap(fd, 4, 16, 8)
        table.take_supported = one_syscall
        for key in (1, 2, 3):
            table.update(struct.pack("=I", key), struct.pack("=QQ", key * 10, key * 100))
        # WHEN entry 2 is taken, then taken again, then an absent key
        first = table.take(struct.pack("=I", 2))
        again = table.take(struct.pack("=I", 2))
        absent = table.take(struct.pack("=I", 7))
        # THEN the first take has its value, and the entry is gone from the kernel's map
        assert first == struct.pack("=QQ", 20, 200)
        assert again is None and absent is None
        assert sorted(struct.unpack("=I", k)[0] for k in table.keys()) == [1, 3]
        # AND on this kernel (6.x) the one-syscall path stayed in use when asked for
        assert table.take_supported is one_syscall
    finally:
        os.close(fd)
