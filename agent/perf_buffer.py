"""BPF stage, events: a per-CPU perf ring buffer behind a BPF_PERF_OUTPUT map, read with mmap.

In: the events map (a perf event array) and the online CPUs. Out: the raw records BPF sent
with ``perf_submit``, and how many the kernel dropped (PERF_RECORD_LOST). One
``PERF_COUNT_SW_BPF_OUTPUT`` event per CPU, its ring mmapped, its fd stored in the map at
the CPU's index; ``read`` walks every ring from tail to head and moves the tail on.
A poller is woken by the first event written after it went to sleep (``wakeup_events`` 1):
a host where nothing starts costs no wake-ups at all, and the caller batches a burst by
waiting a moment before it reads again. ``wakeup_fd`` is the write end of a pipe the poller
also watches: made Python's signal wakeup fd, a signal ends the wait at once.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
from collections.abc import Sequence

from agent import bpf_sys

PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
_HEAD_OFFSET = 1024  # struct perf_event_mmap_page: data_head, data_tail, data_offset, data_size
_TAIL_OFFSET = 1032


class Ring:
    """One CPU's ring: records between data_tail (ours) and data_head (the kernel's)."""

    __slots__ = ("data_offset", "data_size", "fd", "mem")

    def __init__(self, mem: mmap.mmap, fd: int = -1):
        """``mem``: the metadata page then the data pages, as perf_event mmap lays them out."""
        self.fd = fd
        self.mem = mem
        offset, size = struct.unpack_from("=QQ", mem, 1040)
        self.data_offset = offset or mmap.PAGESIZE
        self.data_size = size or len(mem) - mmap.PAGESIZE

    @classmethod
    def open(cls, fd: int, pages: int) -> Ring:
        mem = mmap.mmap(fd, (pages + 1) * mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return cls(mem, fd)

    def read(self, records: list[bytes]) -> int:
        """Append every sample's raw bytes to ``records``; returns records lost."""
        mem = self.mem
        head = struct.unpack_from("=Q", mem, _HEAD_OFFSET)[0]
        tail = struct.unpack_from("=Q", mem, _TAIL_OFFSET)[0]
        if head == tail:
            return 0
        lost = 0
        size, base = self.data_size, self.data_offset
        while tail < head:
            start = tail % size
            header = self._bytes(base, size, start, 8)
            kind, _misc, length = struct.unpack("=IHH", header)
            if length < 8:
                break  # a torn header should not happen; stop rather than spin
            body = self._bytes(base, size, (start + 8) % size, length - 8)
            if kind == PERF_RECORD_SAMPLE:
                raw_size = struct.unpack_from("=I", body, 0)[0]
                records.append(body[4:4 + raw_size])
            elif kind == PERF_RECORD_LOST:
                lost += struct.unpack_from("=QQ", body, 0)[1]
            tail += length
        struct.pack_into("=Q", mem, _TAIL_OFFSET, tail)
        return lost

    def _bytes(self, base: int, size: int, start: int, length: int) -> bytes:
        end = start + length
        if end <= size:
            return self.mem[base + start:base + end]
        return self.mem[base + start:base + size] + self.mem[base:base + end - size]

    def close(self) -> None:
        self.mem.close()
        if self.fd >= 0:
            os.close(self.fd)


class PerfBuffer:
    """Every online CPU's ring of one BPF_PERF_OUTPUT map."""

    def __init__(self, events_map: bpf_sys.BpfMap, cpus: Sequence[int], pages: int):
        self._rings: list[Ring] = []
        self._poll = select.poll()
        self._wake_r, self.wakeup_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._wake_r, select.POLLIN)
        try:
            for cpu in cpus:
                attr = bpf_sys.perf_event_attr(
                    type_=bpf_sys.PERF_TYPE_SOFTWARE, config=bpf_sys.PERF_COUNT_SW_BPF_OUTPUT, period_or_freq=1,
                    sample_type=bpf_sys.PERF_SAMPLE_RAW, wakeup_events=1, disabled=False)
                fd = bpf_sys.perf_event_open(attr, pid=-1, cpu=cpu)
                try:
                    ring = Ring.open(fd, pages)
                except OSError:
                    os.close(fd)
                    raise
                self._rings.append(ring)
                self._poll.register(fd, select.POLLIN)
                events_map.update(struct.pack("=I", cpu), struct.pack("=I", fd))
        except OSError:
            self.close()
            raise
        self.lost = 0

    def read(self, timeout_ms: int) -> list[bytes]:
        """Records in every ring, waiting up to ``timeout_ms`` for the first when none is there
        (a byte written to ``wakeup_fd`` ends the wait too)."""
        records: list[bytes] = []
        for ring in self._rings:
            self.lost += ring.read(records)
        if records:
            self._poll.poll(0)  # spend the wake-ups these records raised: a later wait is for new ones
            return records
        if timeout_ms <= 0:
            return records
        ready = self._poll.poll(timeout_ms)
        if any(fd == self._wake_r for fd, _ in ready):
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if ready:
            for ring in self._rings:
                self.lost += ring.read(records)
        return records

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
        for fd in (self._wake_r, self.wakeup_fd):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self.wakeup_fd = -1
