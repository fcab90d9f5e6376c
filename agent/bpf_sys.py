"""BPF stage, plain syscalls: ``bpf()`` map commands and ``perf_event_open`` through ctypes.

In: file descriptors of maps and programs (handed over by the load helper, agent/bpf_handover.py).
Out: bytes read from maps, perf-event fds. No bcc, no LLVM: this is what the long-running
daemon uses to drive what the helper compiled and loaded. x86-64 and arm64 syscall numbers.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import struct
from pathlib import Path

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}
SYS_BPF, SYS_PERF_EVENT_OPEN = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_ATTR_SIZE = 128  # zero-padded: the kernel accepts a larger attr when the tail is zero
BPF_OBJ_NAME_LEN = 16
BPF_ANY = 0

PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
_ATTR_DISABLED = 1 << 0
_ATTR_FREQ = 1 << 10
PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7

PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408  # _IOW('$', 8, __u32)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


_SYS_BPF = ctypes.c_long(SYS_BPF)
_UNSUPPORTED = (22, 95, 524)  # EINVAL, EOPNOTSUPP, ENOTSUPP: a command this kernel or map type lacks


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    return int(_check(_syscall(_SYS_BPF, ctypes.c_long(cmd), attr, ctypes.c_uint(len(attr)))))


def _name(name: str) -> bytes:
    return name.encode()[:BPF_OBJ_NAME_LEN - 1]


def map_create(*, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str) -> int:
    """A new map's fd (BPF_MAP_CREATE, no BTF)."""
    attr = ctypes.create_string_buffer(BPF_ATTR_SIZE)
    struct.pack_into("=IIIIIII16s", attr, 0, map_type, key_size, value_size, max_entries, flags, 0, 0, _name(name))
    return bpf(BPF_MAP_CREATE, attr)


def prog_load(*, prog_type: int, insns: bytes, license: str, name: str, log_size: int = 0) -> int:
    """A loaded program's fd (BPF_PROG_LOAD). With ``log_size`` the verifier's last log line
    joins the OSError's message when the kernel refuses the program."""
    attr = ctypes.create_string_buffer(BPF_ATTR_SIZE)
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_size else None
    struct.pack_into("=IIQQIIQII16s", attr, 0, prog_type, len(insns) // 8, ctypes.addressof(code),
                     ctypes.addressof(lic), 1 if log else 0, log_size, ctypes.addressof(log) if log else 0, 0, 0,
                     _name(name))
    try:
        return bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        last = log.value.decode(errors="replace").strip().splitlines()[-1:] if log is not None else []
        if last:
            raise OSError(exc.errno, f"{exc.strerror}: {last[0]}") from None
        raise


def obj_info(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of a map's or program's info struct (BPF_OBJ_GET_INFO_BY_FD)."""
    info = ctypes.create_string_buffer(size)
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("=IIQ", attr, 0, fd, size, ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw


class BpfMap:
    """One map fd with fixed key and value sizes; buffers are allocated once and reused."""

    def __init__(self, fd: int, key_size: int, value_size: int, max_entries: int):
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self._attr = ctypes.create_string_buffer(32)
        self._key = ctypes.create_string_buffer(key_size)
        self._next = ctypes.create_string_buffer(key_size)
        self._value = ctypes.create_string_buffer(value_size)
        self._batch: tuple[ctypes.Array[ctypes.c_char], ...] | None = None
        self.batch_supported = True
        self.take_supported = True  # BPF_MAP_LOOKUP_AND_DELETE_ELEM (stack trace maps: 6.x)
        # The key and value buffers never move: one attr per command, built once.
        self._take_attr = ctypes.create_string_buffer(32)
        struct.pack_into("=IIQQQ", self._take_attr, 0, fd, 0, ctypes.addressof(self._key),
                         ctypes.addressof(self._value), 0)

    def _elem(self, cmd: int, key: bytes | None, second: ctypes.Array[ctypes.c_char] | None, flags: int = 0) -> None:
        if key is not None:
            ctypes.memmove(self._key, key, self.key_size)
        struct.pack_into("=IIQQQ", self._attr, 0, self.fd, 0,
                         ctypes.addressof(self._key) if key is not None else 0,
                         ctypes.addressof(second) if second is not None else 0, flags)
        bpf(cmd, self._attr)

    def lookup(self, key: bytes) -> bytes | None:
        try:
            self._elem(BPF_MAP_LOOKUP_ELEM, key, self._value)
        except FileNotFoundError:
            return None
        return self._value.raw

    def take(self, key: bytes) -> bytes | None:
        """Read and delete one entry: one syscall where the kernel can (lookup-and-delete),
        else a lookup and a delete. None when it is absent."""
        if self.take_supported:
            ctypes.memmove(self._key, key, self.key_size)
            try:
                bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, self._take_attr)
                return self._value.raw
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self.take_supported = False
        value = self.lookup(key)
        return value if value is not None and self.delete(key) else None

    def update(self, key: bytes, value: bytes) -> None:
        ctypes.memmove(self._value, value, self.value_size)
        self._elem(BPF_MAP_UPDATE_ELEM, key, self._value, BPF_ANY)

    def delete(self, key: bytes) -> bool:
        try:
            self._elem(BPF_MAP_DELETE_ELEM, key, None)
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> list[bytes]:
        """Every key present now (cost: one syscall per entry)."""
        out: list[bytes] = []
        key: bytes | None = None
        while True:
            try:
                self._elem(BPF_MAP_GET_NEXT_KEY, key, self._next)
            except FileNotFoundError:
                return out
            key = self._next.raw
            out.append(key)

    def clear(self) -> int:
        """Delete every entry; returns how many were deleted."""
        keys = self.keys()
        for key in keys:
            self.delete(key)
        return len(keys)

    def take_all(self) -> list[tuple[bytes, bytes]]:
        """Read and delete every entry: one LOOKUP_AND_DELETE_BATCH call when the kernel
        has it (5.6+), else key by key (entries added meanwhile wait for the next call)."""
        if self.batch_supported:
            try:
                return self._take_batch()
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self.batch_supported = False
        out = []
        for key in self.keys():
            value = self.lookup(key)
            if value is not None and self.delete(key):
                out.append((key, value))
        return out

    def _take_batch(self) -> list[tuple[bytes, bytes]]:
        if self._batch is None:
            self._batch = (ctypes.create_string_buffer(56), ctypes.create_string_buffer(self.key_size),
                           ctypes.create_string_buffer(self.key_size * self.max_entries),
                           ctypes.create_string_buffer(self.value_size * self.max_entries))
        attr, token, keys, values = self._batch
        out: list[tuple[bytes, bytes]] = []
        first = True
        while True:
            struct.pack_into("=QQQQIIQQ", attr, 0, 0 if first else ctypes.addressof(token), ctypes.addressof(token),
                             ctypes.addressof(keys), ctypes.addressof(values), self.max_entries, self.fd, 0, 0)
            done = False
            try:
                bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, attr)
            except FileNotFoundError:
                done = True  # the last batch (possibly empty)
            count = struct.unpack_from("=I", attr, 32)[0]
            if count:
                k, v = keys.raw[: count * self.key_size], values.raw[: count * self.value_size]
                ks, vs = self.key_size, self.value_size
                out.extend((k[i * ks:(i + 1) * ks], v[i * vs:(i + 1) * vs]) for i in range(count))
            if done or count == 0:
                return out
            first = False


Attr = ctypes.Array[ctypes.c_char]


def perf_event_attr(*, type_: int, config: int, period_or_freq: int, freq: bool = False, sample_type: int = 0,
                    wakeup_events: int = 0, disabled: bool = True) -> Attr:
    """A perf_event_attr; a poller of its ring is woken every ``wakeup_events`` records."""
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    flags = (_ATTR_DISABLED if disabled else 0) | (_ATTR_FREQ if freq else 0)
    struct.pack_into("=IIQQQQQI", attr, 0, type_, PERF_ATTR_SIZE, config, period_or_freq, sample_type, 0,
                     flags, wakeup_events)
    return attr


def perf_event_open(attr: ctypes.Array[ctypes.c_char], *, pid: int, cpu: int, group_fd: int = -1) -> int:
    return int(_check(_syscall(ctypes.c_long(SYS_PERF_EVENT_OPEN), attr, ctypes.c_int(pid), ctypes.c_int(cpu),
                               ctypes.c_int(group_fd), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))))


def attach_program(event_fd: int, prog_fd: int) -> None:
    fcntl.ioctl(event_fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
    fcntl.ioctl(event_fd, PERF_EVENT_IOC_ENABLE, 0)


def parse_cpu_list(text: str) -> list[int]:
    """``0-3,5`` -> [0, 1, 2, 3, 5] (the format of /sys/devices/system/cpu/online)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def online_cpus(sys_root: Path = Path("/sys")) -> list[int]:
    return parse_cpu_list((sys_root / "devices/system/cpu/online").read_text())


def possible_cpus(sys_root: Path = Path("/sys")) -> int:
    return max(parse_cpu_list((sys_root / "devices/system/cpu/possible").read_text())) + 1


def memlock_bytes(fd: int, proc_self: Path = Path("/proc/self")) -> int:
    """The kernel's memory charge of a BPF map or program fd (fdinfo ``memlock``), 0 if none."""
    try:
        for line in (proc_self / "fdinfo" / str(fd)).read_text().splitlines():
            if line.startswith("memlock:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0
