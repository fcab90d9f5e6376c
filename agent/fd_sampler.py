"""BPF stage, the agent's side: drive the loaded program through its fds, without bcc.

In: ``LoadedFds`` from the program cache or the helper (agent/bpf_object.py). Out: the ``Sampler`` interface the
drain uses (generation flip, counts, stacks, counters, process events), plus attach, detach,
``set_frequency`` for the resource governor and ``map_memory_bytes`` for telemetry.
Sampling: one software cpu-clock perf event per online CPU in frequency mode, the program set
on it with PERF_EVENT_IOC_SET_BPF; the sched tracepoints are perf events of type TRACEPOINT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

from agent import bpf_abi, bpf_object, bpf_sys
from agent.bpf_abi import CountEntry, ProcessEvent
from agent.bpf_handover import LoadOptions
from agent.errors import BpfLoadError
from agent.host import TRACEFS, default_cache_dir, ensure_tracefs
from agent.perf_buffer import PerfBuffer

log = logging.getLogger(__name__)

TRACEPOINTS = {
    "tracepoint__sched__sched_process_exec": "sched/sched_process_exec",
    "tracepoint__sched__sched_process_exit": "sched/sched_process_exit",
}
PER_CPU = frozenset({"counters"})  # a lookup returns one 8-byte-aligned value per possible CPU
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_KEY = struct.Struct(bpf_abi.SAMPLE_KEY_FORMAT)
_EVENT = struct.Struct(bpf_abi.PROCESS_EVENT_FORMAT)
_STACK = struct.Struct(f"={bpf_abi.MAX_STACK_DEPTH}Q")


def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def decode_event(raw: bytes) -> ProcessEvent:
    kind, pid, incarnation, time_ns, comm = _EVENT.unpack_from(raw)
    return ProcessEvent(kind=kind, pid=pid, incarnation=incarnation, time_ns=time_ns, comm=_comm(comm))


def decode_count(key: bytes, value: bytes) -> CountEntry:
    pid, tid, incarnation, user_id, kernel_id, comm = _KEY.unpack(key)
    return CountEntry(pid=pid, tid=tid, incarnation=incarnation, user_stack_id=user_id,
                      kernel_stack_id=kernel_id, comm=_comm(comm), count=_U64.unpack_from(value)[0])


class FdSampler:
    """The loaded program, driven with bpf() and perf_event_open; see the module docstring."""

    def __init__(self, options: LoadOptions, tracefs: Path = TRACEFS, cache_dir: Path | None = None) -> None:
        ensure_tracefs()
        self._tracefs = tracefs
        self._fds = bpf_object.load(options, cache_dir or default_cache_dir())
        try:
            possible = bpf_sys.possible_cpus()
            maps = {name: bpf_sys.BpfMap(m.fd, m.key_size, m.value_size * (possible if name in PER_CPU else 1),
                                         m.max_entries)
                    for name, m in self._fds.maps.items()}
            self._counts = [maps["counts0"], maps["counts1"]]
            self._stacks = [maps["stacks0"], maps["stacks1"]]
            self._control = maps["control"]
            self._counters = maps["counters"]
            self._maps = maps
            self._check_layouts()
            if options.pids:
                for pid in options.pids:
                    maps["filter_pids"].update(_U32.pack(pid), b"\1")
                self._control.update(_U32.pack(bpf_abi.CONTROL_FILTER_PIDS), _U64.pack(1))
            self._cpus = bpf_sys.online_cpus()
            self._per_cpu = struct.Struct(f"={self._counters.value_size // 8}Q")  # one u64 per possible CPU
            self._events = PerfBuffer(maps["events"], self._cpus, bpf_abi.EVENTS_PAGES)
        except OSError as exc:
            self._fds.close()
            raise BpfLoadError(f"cannot drive the loaded BPF program: {exc}") from exc
        self.frequency_hz = options.frequency_hz
        self._sampling_fds: list[int] = []
        self._tracepoint_fds: list[int] = []

    def _check_layouts(self) -> None:
        expected = {"counts0": (bpf_abi.SAMPLE_KEY_SIZE, 8), "stacks0": (4, bpf_abi.STACK_VALUE_SIZE),
                    "control": (4, 8), "pids": (4, 8)}
        for name, sizes in expected.items():
            m = self._maps[name]
            if (m.key_size, m.value_size) != sizes:
                raise BpfLoadError(f"map {name} has key/value sizes {m.key_size}/{m.value_size}, "
                                   f"agent/bpf_abi.py expects {sizes[0]}/{sizes[1]}")

    @property
    def helper_pid(self) -> int:
        """The compiling helper's pid, 0 when the program came from the cache."""
        return self._fds.helper_pid

    # --- attach ---------------------------------------------------------------------------
    def attach(self) -> None:
        """Start: the sched tracepoints first (so a process seen is never missed at exit),
        then one cpu-clock perf event per online CPU."""
        try:
            for prog, event in TRACEPOINTS.items():
                tp_id = int((self._tracefs / "events" / event / "id").read_text())
                attr = bpf_sys.perf_event_attr(type_=bpf_sys.PERF_TYPE_TRACEPOINT, config=tp_id, period_or_freq=1,
                                               sample_type=bpf_sys.PERF_SAMPLE_RAW, wakeup_events=1)
                fd = bpf_sys.perf_event_open(attr, pid=-1, cpu=0)
                self._tracepoint_fds.append(fd)
                bpf_sys.attach_program(fd, self._fds.programs[prog])
            self._open_sampling_events(self.frequency_hz)
        except OSError as exc:
            self.detach()
            raise BpfLoadError(f"cannot attach the BPF program: {exc.strerror or exc}") from exc

    def _open_sampling_events(self, frequency_hz: int) -> None:
        for cpu in self._cpus:
            attr = bpf_sys.perf_event_attr(type_=bpf_sys.PERF_TYPE_SOFTWARE, config=bpf_sys.PERF_COUNT_SW_CPU_CLOCK,
                                           period_or_freq=frequency_hz, freq=True)
            fd = bpf_sys.perf_event_open(attr, pid=-1, cpu=cpu)
            self._sampling_fds.append(fd)
            bpf_sys.attach_program(fd, self._fds.programs["on_cpu_sample"])

    def set_frequency(self, frequency_hz: int) -> None:
        """Re-open every CPU's sampling event at ``frequency_hz`` (PERF_EVENT_IOC_PERIOD is no
        way: the kernel turns a cpu-clock frequency into a fixed period at open, so the ioctl
        would take the number as nanoseconds)."""
        for fd in self._sampling_fds:
            os.close(fd)
        self._sampling_fds = []
        try:
            self._open_sampling_events(frequency_hz)
        except OSError as exc:
            raise BpfLoadError(f"cannot re-attach the sampling events at {frequency_hz} Hz: {exc}") from exc
        self.frequency_hz = frequency_hz

    def detach(self) -> None:
        """Stop sampling and the tracepoints; the maps stay readable for the final drain."""
        for fd in self._sampling_fds + self._tracepoint_fds:
            os.close(fd)
        self._sampling_fds = []
        self._tracepoint_fds = []

    def close(self) -> None:
        self.detach()
        self._events.close()
        self._fds.close()

    # --- Sampler protocol -------------------------------------------------------------------
    def generation(self) -> int:
        value = self._control.lookup(_U32.pack(bpf_abi.CONTROL_GENERATION))
        return _U64.unpack(value)[0] if value else 0

    def set_generation(self, generation: int) -> None:
        self._control.update(_U32.pack(bpf_abi.CONTROL_GENERATION), _U64.pack(generation))

    def take_counts(self, generation: int) -> list[CountEntry]:
        """Read and delete every entry of an inactive counts map (one batch syscall)."""
        return [decode_count(k, v) for k, v in self._counts[generation].take_all()]

    def read_stack(self, generation: int, stack_id: int) -> tuple[int, ...]:
        """The stack's addresses; it leaves the inactive map as it is read (the drain reads
        each id once), in one syscall where the kernel can look up and delete at once."""
        raw = self._stacks[generation].take(_U32.pack(stack_id))
        if raw is None:
            return ()
        ips = _STACK.unpack(raw)
        try:
            return ips[:ips.index(0)]
        except ValueError:
            return ips

    def clear_stacks(self, generation: int) -> None:
        """Delete what is left after the reads (stacks of samples whose count was lost): cost
        follows the unique stacks of the generation."""
        self._stacks[generation].clear()

    def read_counter(self, index: int) -> int:
        """One per-CPU counter, summed over CPUs (one bpf() call)."""
        raw = self._counters.lookup(_U32.pack(index))
        return sum(self._per_cpu.unpack(raw)) if raw else 0

    def read_counters(self) -> tuple[int, ...]:
        """Every per-CPU counter, summed over CPUs, indexed by bpf_abi.COUNTER_*."""
        totals = [self.read_counter(index) for index in range(bpf_abi.COUNTER_SIZE)]
        totals[bpf_abi.COUNTER_EVENTS_LOST] += self._events.lost
        return tuple(totals)

    def poll_events(self, timeout_ms: int) -> list[ProcessEvent]:
        """Events of every CPU's ring in the order they happened (rings are read one CPU after
        another, so an exit on CPU 0 would otherwise come before its first sample on CPU 1);
        when there are none, waits up to ``timeout_ms`` for the first, or, inside
        ``signals_end_waits``, for a signal."""
        events = [decode_event(raw) for raw in self._events.read(timeout_ms)]
        events.sort(key=lambda e: e.time_ns)
        return events

    @contextlib.contextmanager
    def signals_end_waits(self) -> Iterator[None]:
        """Inside, a signal ends a ``poll_events`` wait at once (its byte lands on the events
        poller's pipe), so the caller's handler is acted on without waiting out a timeout.
        Outside the main thread, where Python allows no wakeup fd, waits end by timeout."""
        try:
            previous = signal.set_wakeup_fd(self._events.wakeup_fd, warn_on_full_buffer=False)
        except ValueError:
            yield
            return
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)

    # --- telemetry --------------------------------------------------------------------------
    def map_memory_bytes(self) -> int:
        """Kernel memory charged to the maps (fdinfo memlock), the figure `bpftool map` shows."""
        return sum(bpf_sys.memlock_bytes(m.fd) for m in self._fds.maps.values())
