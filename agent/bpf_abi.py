"""Python mirror of bpf/profile.h: counter indexes, event kinds, sizes, and the plain values
the loader hands to the drain. tests/unit/test_bpf_abi.py checks every constant against the
header through ``gcc -E -dM``, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

COUNTS_MAP_SIZE = 16384
STACK_MAP_SIZE = 8192
PIDS_MAP_SIZE = 32768
EVENTS_PAGES = 64
TASK_COMM_LEN = 16
MAX_STACK_DEPTH = 127

GENERATIONS = 2
CONTROL_GENERATION = 0
CONTROL_FILTER_PIDS = 1
CONTROL_SIZE = 2

COUNTER_TAKEN = 0
COUNTER_COUNTED = 1
COUNTER_IDLE = 2
COUNTER_FILTERED = 3
COUNTER_LOST_COUNTS_FULL = 4
COUNTER_KSTACK_COLLISION = 5
COUNTER_KSTACK_NOMEM = 6
COUNTER_USTACK_COLLISION = 7
COUNTER_USTACK_NOMEM = 8
COUNTER_USTACK_MISSING = 9
COUNTER_EVENTS_LOST = 10
COUNTER_PIDS_FULL = 11
COUNTER_NEW_KEYS = 12
COUNTER_SIZE = 13

EVENT_NEW_PROCESS = 1
EVENT_EXEC = 2
EVENT_EXIT = 3

# Names for telemetry and the summary line, indexed like the counters map.
COUNTER_NAMES = (
    "taken",
    "counted",
    "idle",
    "filtered",
    "lost_counts_map_full",
    "kernel_stack_collision",
    "kernel_stack_map_full",
    "user_stack_collision",
    "user_stack_map_full",
    "user_stack_missing",
    "process_events_lost",
    "pids_map_full",
    "new_keys",
)


# struct layouts for the struct module (native alignment spelled out, little or big endian as
# the host): the test diffs sizes and offsets against gcc's layout of the header's structs.
SAMPLE_KEY_FORMAT = "=IIQii16s"  # struct sample_key: pid, tid, incarnation, user/kernel stack id, comm
PROCESS_EVENT_FORMAT = "=IIQQ16s"  # struct process_event: kind, pid, incarnation, time_ns, comm
SAMPLE_KEY_SIZE = struct.calcsize(SAMPLE_KEY_FORMAT)
PROCESS_EVENT_SIZE = struct.calcsize(PROCESS_EVENT_FORMAT)
STACK_VALUE_SIZE = 8 * MAX_STACK_DEPTH  # a stack trace map value: u64 ip[MAX_STACK_DEPTH]


def field_offsets(fmt: str) -> list[int]:
    """Offset of each field of a ``struct`` format of single fields and ``Ns`` strings."""
    codes = re.findall(r"\d*[a-zA-Z]", fmt[1:])
    return [struct.calcsize(fmt[0] + "".join(codes[:i])) for i in range(len(codes))]


@dataclass(frozen=True, slots=True)
class CountEntry:
    """One counts-map entry as drained: ``pid`` is the tgid, ``tid`` the thread."""

    pid: int
    tid: int
    incarnation: int
    user_stack_id: int  # negative: -errno from bpf_get_stackid, no user stack
    kernel_stack_id: int  # negative: no kernel stack (sampled in user mode, or an error)
    comm: str
    count: int


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    kind: int  # EVENT_*
    pid: int
    incarnation: int
    time_ns: int  # bpf_ktime_get_ns(), CLOCK_MONOTONIC
    comm: str
