"""BPF stage: compile, load and attach bpf/profile.bpf.c with bcc; the only bcc importer.

In: ``LoadOptions`` (frequency, pid filter, map sizes). Out: a ``BccSampler`` whose small
interface (generation flip, counts, stacks, counters, events, detach) is all the drain uses,
so the compiler can move into a helper process without the rest of the agent noticing.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent import bpf_abi, host
from agent.bpf_abi import CountEntry, ProcessEvent
from agent.errors import BpfLoadError
from bpf import BPF_DIR, PROGRAM_PATH

log = logging.getLogger(__name__)

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0


class ProcessEventStruct(ctypes.Structure):
    """``struct process_event`` of bpf/profile.h (bcc cannot derive it from __u32 fields)."""

    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("incarnation", ctypes.c_uint64),
        ("time_ns", ctypes.c_uint64),
        ("comm", ctypes.c_char * bpf_abi.TASK_COMM_LEN),
    ]


@dataclass(frozen=True)
class LoadOptions:
    frequency_hz: int = 99
    pids: tuple[int, ...] = ()
    counts_map_size: int = bpf_abi.COUNTS_MAP_SIZE
    stack_map_size: int = bpf_abi.STACK_MAP_SIZE
    pids_map_size: int = bpf_abi.PIDS_MAP_SIZE

    def cflags(self) -> list[str]:
        return [
            f"-I{BPF_DIR}",
            f"-DCOUNTS_MAP_SIZE={self.counts_map_size}",
            f"-DSTACK_MAP_SIZE={self.stack_map_size}",
            f"-DPIDS_MAP_SIZE={self.pids_map_size}",
            "-Wno-macro-redefined",
        ]


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """bcc's C compiler writes diagnostics to fd 2; keep them for the error line instead.
    The list is filled when the block ends, so read it after the ``with``."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.extend(tmp.read().decode(errors="replace").splitlines())


def _explain(exc: BaseException, diagnostics: list[str]) -> str:
    text = str(exc)
    errors = [d for d in diagnostics if "error" in d.lower()]
    if "Operation not permitted" in text or "EPERM" in text or isinstance(exc, PermissionError):
        return (
            "BPF not permitted: run as root, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE "
            "(and CAP_SYS_ADMIN before kernel 5.8)"
        )
    if errors:
        return f"BPF program failed to compile: {errors[0].strip()}"
    return f"BPF program failed to load: {text.splitlines()[0] if text else type(exc).__name__}"


class BccSampler:
    """The loaded program: maps and perf events behind a small, bcc-free interface."""

    def __init__(self, options: LoadOptions) -> None:
        headers = host.find_kernel_headers()
        if not headers.found:
            raise BpfLoadError(
                "no kernel headers for bcc: install linux-headers-$(uname -r) or your distro's "
                "linux-headers package, or enable CONFIG_IKHEADERS"
            )
        if headers.kind != "modules-build":
            log.warning("kernel headers for bcc: using %s", headers.detail)
            os.environ["BCC_KERNEL_SOURCE"] = str(headers.source_dir)
        host.ensure_tracefs()
        self._events: list[ProcessEvent] = []
        failure: Exception | None = None
        with _stderr_captured() as diagnostics:
            try:
                import bcc  # the one place bcc is imported

                self._bpf: Any = bcc.BPF(src_file=str(PROGRAM_PATH).encode(), cflags=options.cflags())
            except Exception as exc:  # bcc raises bare Exception for every load failure
                failure = exc
        if failure is not None:
            raise BpfLoadError(_explain(failure, diagnostics)) from failure
        self._counts = [self._bpf["counts0"], self._bpf["counts1"]]
        self._stacks = [self._bpf["stacks0"], self._bpf["stacks1"]]
        self._control = self._bpf["control"]
        self._counters = self._bpf["counters"]
        if options.pids:
            filt = self._bpf["filter_pids"]
            for pid in options.pids:
                filt[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
            self._control[ctypes.c_int(bpf_abi.CONTROL_FILTER_PIDS)] = ctypes.c_uint64(1)
        self._bpf["events"].open_perf_buffer(
            self._on_event, page_cnt=bpf_abi.EVENTS_PAGES, lost_cb=self._on_lost
        )
        self._events_lost_in_buffer = 0
        self._frequency_hz = options.frequency_hz
        self._attached = False
        self._tracepoints_attached = True

    def attach(self) -> None:
        """Start sampling: one cpu-clock perf event per online CPU, and the sched tracepoints."""
        try:
            # TRACEPOINT_PROBE functions are attached by bcc at load; the perf event is ours.
            self._bpf.attach_perf_event(
                ev_type=PERF_TYPE_SOFTWARE,
                ev_config=PERF_COUNT_SW_CPU_CLOCK,
                fn_name=b"on_cpu_sample",
                sample_freq=self._frequency_hz,
                cpu=-1,
            )
        except Exception as exc:  # bcc raises bare Exception
            raise BpfLoadError(_explain(exc, [])) from exc
        self._attached = True

    def detach(self) -> None:
        """Stop sampling; the maps stay readable for the final drain. Idempotent."""
        if self._attached:
            self._bpf.detach_perf_event(ev_type=PERF_TYPE_SOFTWARE, ev_config=PERF_COUNT_SW_CPU_CLOCK)
            self._attached = False
        if self._tracepoints_attached:
            # TRACEPOINT_PROBE functions were attached by bcc at load.
            for event in (b"sched:sched_process_exec", b"sched:sched_process_exit"):
                self._bpf.detach_tracepoint(event)
            self._tracepoints_attached = False

    def close(self) -> None:
        self.detach()
        self._bpf.cleanup()

    # --- generations ---------------------------------------------------------------------
    def generation(self) -> int:
        return int(self._control[ctypes.c_int(bpf_abi.CONTROL_GENERATION)].value)

    def set_generation(self, generation: int) -> None:
        self._control[ctypes.c_int(bpf_abi.CONTROL_GENERATION)] = ctypes.c_uint64(generation)

    def take_counts(self, generation: int) -> list[CountEntry]:
        """Read and delete every entry of an inactive counts map."""
        table = self._counts[generation]
        entries = []
        try:
            pairs = list(table.items_lookup_and_delete_batch())
        except Exception:  # bcc raises bare Exception where batch ops are missing
            pairs = list(table.items())
            table.clear()
        for key, value in pairs:
            entries.append(
                CountEntry(
                    pid=key.pid,
                    tid=key.tid,
                    incarnation=key.incarnation,
                    user_stack_id=key.user_stack_id,
                    kernel_stack_id=key.kernel_stack_id,
                    comm=bytes(key.comm).split(b"\0", 1)[0].decode(errors="replace"),
                    count=int(value.value if hasattr(value, "value") else value),
                )
            )
        return entries

    def read_stack(self, generation: int, stack_id: int) -> tuple[int, ...]:
        """Addresses of one stack, leaf first; () when the id is not in the map."""
        table = self._stacks[generation]
        try:
            trace = table[ctypes.c_int(stack_id)]
        except KeyError:
            return ()
        out = []
        for ip in trace.ip:
            if ip == 0:
                break
            out.append(int(ip))
        return tuple(out)

    def clear_stacks(self, generation: int) -> None:
        self._stacks[generation].clear()

    def read_counters(self) -> tuple[int, ...]:
        """Every per-CPU counter, summed over CPUs, indexed by bpf_abi.COUNTER_*."""
        totals = [0] * bpf_abi.COUNTER_SIZE
        for index in range(bpf_abi.COUNTER_SIZE):
            for value in self._counters[ctypes.c_int(index)]:
                totals[index] += int(value)
        totals[bpf_abi.COUNTER_EVENTS_LOST] += self._events_lost_in_buffer
        return tuple(totals)

    # --- process events ------------------------------------------------------------------
    def _on_event(self, _cpu: int, data: Any, _size: int) -> None:
        ev = ctypes.cast(data, ctypes.POINTER(ProcessEventStruct)).contents
        self._events.append(
            ProcessEvent(
                kind=ev.kind,
                pid=ev.pid,
                incarnation=ev.incarnation,
                time_ns=ev.time_ns,
                comm=ev.comm.decode(errors="replace"),
            )
        )

    def _on_lost(self, lost: int) -> None:
        self._events_lost_in_buffer += lost

    def poll_events(self, timeout_ms: int) -> list[ProcessEvent]:
        """Process events that arrived since the last call, waiting up to ``timeout_ms``."""
        try:
            self._bpf.perf_buffer_poll(timeout=timeout_ms)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
        events, self._events = self._events, []
        return events
