"""The perf ring reader and the fd sampler's decoders, on hand-built bytes laid out as
include/uapi/linux/perf_event.h documents them (no kernel needed)."""

from __future__ import annotations

import mmap
import struct

from agent import bpf_abi
from agent.bpf_sys import parse_cpu_list
from agent.fd_sampler import decode_count, decode_event
from agent.perf_buffer import PERF_RECORD_LOST, PERF_RECORD_SAMPLE, Ring

PAGE = mmap.PAGESIZE


def ring_with(records: list[bytes], start: int) -> tuple[Ring, mmap.mmap]:
    """A one-data-page ring whose tail is at ``start`` with ``records`` written from there."""
    mem = mmap.mmap(-1, 2 * PAGE)
    struct.pack_into("=QQ", mem, 1040, PAGE, PAGE)  # data_offset, data_size
    pos = start
    for record in records:
        for byte in record:
            mem[PAGE + pos % PAGE] = byte
            pos += 1
    struct.pack_into("=QQ", mem, 1024, pos, start)  # data_head, data_tail
    return Ring(mem), mem


def sample(raw: bytes) -> bytes:
    body = struct.pack("=I", len(raw)) + raw
    body += b"\0" * (-(len(body) + 8) % 8)
    return struct.pack("=IHH", PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body


def lost(n: int) -> bytes:
    return struct.pack("=IHHQQ", PERF_RECORD_LOST, 0, 24, 7, n)


def event_bytes(kind: int, pid: int) -> bytes:
    return struct.pack(bpf_abi.PROCESS_EVENT_FORMAT, kind, pid, 123, 456, b"true\0")


def test_records_across_the_end_of_the_ring_are_read_whole() -> None:
    # GIVEN two process events and a lost record, the second event straddling the ring's end
    first, second = event_bytes(bpf_abi.EVENT_NEW_PROCESS, 10), event_bytes(bpf_abi.EVENT_EXIT, 11)
    ring, mem = ring_with([sample(first), lost(5), sample(second)], start=PAGE - 60)
    out: list[bytes] = []
    # WHEN the ring is read
    dropped = ring.read(out)
    # THEN both raw payloads come back intact and in order, the loss is counted
    assert out == [first, second]
    assert dropped == 5
    # AND the tail has moved up to the head, so nothing is read twice
    head, tail = struct.unpack_from("=QQ", mem, 1024)
    assert tail == head
    assert ring.read(out) == 0 and len(out) == 2


def test_decoders_follow_the_struct_formats() -> None:
    event = decode_event(event_bytes(bpf_abi.EVENT_EXEC, 42))
    assert (event.kind, event.pid, event.incarnation, event.time_ns, event.comm) == (bpf_abi.EVENT_EXEC, 42, 123,
                                                                                      456, "true")
    key = struct.pack(bpf_abi.SAMPLE_KEY_FORMAT, 5, 6, 7, -14, 3, b"comm-name")
    entry = decode_count(key, struct.pack("=Q", 9))
    assert (entry.pid, entry.tid, entry.incarnation, entry.user_stack_id, entry.kernel_stack_id, entry.comm,
            entry.count) == (5, 6, 7, -14, 3, "comm-name", 9)


def test_cpu_lists_as_sysfs_writes_them() -> None:
    assert parse_cpu_list("0-3,5\n") == [0, 1, 2, 3, 5]
    assert parse_cpu_list("0\n") == [0]
