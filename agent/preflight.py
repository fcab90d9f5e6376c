"""Preflight: can this host run hostflame? One ``CheckResult`` per item, with the fix.

In: the kernel, /proc/self/status, /proc/sys, the filesystem. Out: results for
``hostflame check`` and the capability test that ``record``/``run`` do before loading BPF.
Nothing here changes the host (no mounts, no header trees written).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib.util
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from agent import host

CAPS = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYSLOG": 34,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
# Needed to load and attach; CAP_SYS_ADMIN stands in for both on older kernels.
REQUIRED_CAPS = ("CAP_BPF", "CAP_PERFMON")
# Needed to read every process's maps and binaries and the kernel's symbols.
HELPFUL_CAPS = ("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_CHECKPOINT_RESTORE", "CAP_SYSLOG",
                "CAP_SYS_RESOURCE")

SYS_BPF = 321  # x86-64
SYS_PERF_EVENT_OPEN = 298  # x86-64


@dataclass(frozen=True)
class CheckResult:
    item: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'OK  ' if self.ok else 'FAIL'} {self.item}: {self.detail}"
        return f"{text} -- fix: {self.fix}" if self.fix and not self.ok else text


def effective_caps(status_path: Path = Path("/proc/self/status")) -> set[str]:
    try:
        for line in status_path.read_text().splitlines():
            if line.startswith("CapEff:"):
                bits = int(line.split()[1], 16)
                return {name for name, bit in CAPS.items() if bits >> bit & 1}
    except (OSError, ValueError):
        pass
    return set()


def missing_required_caps(caps: set[str]) -> list[str]:
    if "CAP_SYS_ADMIN" in caps:
        return []
    return [c for c in REQUIRED_CAPS if c not in caps]


def _kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def check_kernel(release: str | None = None) -> CheckResult:
    release = release or os.uname().release
    version = _kernel_version(release)
    if version >= (5, 8):
        return CheckResult("kernel", True, f"{release}")
    if version >= (4, 9):
        return CheckResult("kernel", True, f"{release} (before 5.8: CAP_SYS_ADMIN needed)")
    return CheckResult("kernel", False, f"{release} is older than 4.9", "use kernel 4.9 or newer")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def check_bpf_syscall() -> CheckResult:
    """Create (and close) a one-element array map: the smallest real bpf() call."""

    class MapCreate(ctypes.Structure):
        _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                    ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                    ("pad", ctypes.c_uint8 * 112)]

    attr = MapCreate(2, 4, 8, 1)  # BPF_MAP_TYPE_ARRAY
    libc = _libc()
    fd = libc.syscall(SYS_BPF, 0, ctypes.byref(attr), ctypes.sizeof(attr))  # BPF_MAP_CREATE
    if fd >= 0:
        os.close(fd)
        return CheckResult("bpf() syscall", True, "map creation works")
    err = ctypes.get_errno()
    fix = "run as root or grant CAP_BPF" if err == errno.EPERM else "enable CONFIG_BPF_SYSCALL"
    return CheckResult("bpf() syscall", False, os.strerror(err), fix)


def check_perf_events(paranoid_path: Path = Path("/proc/sys/kernel/perf_event_paranoid")) -> CheckResult:
    """Open (and close) a software cpu-clock event on CPU 0 for all processes."""

    class PerfAttr(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                    ("sample_freq", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                    ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                    ("rest", ctypes.c_uint8 * 64)]

    attr = PerfAttr(type=1, size=ctypes.sizeof(PerfAttr), config=0, sample_freq=99,
                    flags=(1 << 0) | (1 << 10))  # disabled, freq
    fd = _libc().syscall(SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, 0, -1, 0)
    try:
        paranoid = paranoid_path.read_text().strip()
    except OSError:
        paranoid = "?"
    if fd >= 0:
        os.close(fd)
        return CheckResult("perf events", True, f"cpu-clock opens on every process (perf_event_paranoid={paranoid})")
    err = ctypes.get_errno()
    return CheckResult("perf events", False, f"{os.strerror(err)} (perf_event_paranoid={paranoid})",
                       "run as root or grant CAP_PERFMON; enable CONFIG_PERF_EVENTS")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # unreadable without privileges
        return False


def check_tracefs() -> CheckResult:
    for path in (host.TRACEFS, host.DEBUGFS / "tracing"):
        if _is_dir(path / "events" / "sched" / "sched_process_exec"):
            return CheckResult("tracefs", True, f"mounted at {path}")
    if os.geteuid() == 0:
        return CheckResult("tracefs", True, f"not mounted; hostflame mounts it at {host.TRACEFS} when it starts")
    return CheckResult("tracefs", False, "not mounted", f"mount -t tracefs tracefs {host.TRACEFS}")


def check_headers() -> CheckResult:
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    choice = host.find_kernel_headers(prepare=False)
    btf_note = "; BTF present" if btf else "; no BTF"
    if choice.found:
        return CheckResult("kernel headers", True, f"{choice.kind}: {choice.detail}{btf_note}")
    return CheckResult("kernel headers", False, f"none found{btf_note}",
                       "apt-get install linux-headers-amd64 (or linux-headers-$(uname -r))")


def check_bcc() -> CheckResult:
    spec = importlib.util.find_spec("bcc")
    if spec is None:
        return CheckResult("bcc", False, "python module not found",
                           "apt-get install python3-bpfcc; use a venv with --system-site-packages")
    return CheckResult("bcc", True, f"{spec.origin}")


def check_capabilities() -> CheckResult:
    caps = effective_caps()
    missing = missing_required_caps(caps)
    if missing:
        return CheckResult("capabilities", False, f"missing {', '.join(missing)}",
                           "run as root, or grant " + ", ".join(REQUIRED_CAPS + HELPFUL_CAPS))
    absent = [c for c in HELPFUL_CAPS if c not in caps and "CAP_SYS_ADMIN" not in caps]
    note = f" (without {', '.join(absent)} some processes cannot be read)" if absent else ""
    return CheckResult("capabilities", True, "can load BPF and open perf events" + note)


def check_memlock() -> CheckResult:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if _kernel_version(os.uname().release) >= (5, 11):
        return CheckResult("memlock", True, "BPF memory is charged to the cgroup (kernel >= 5.11)")
    if soft == resource.RLIM_INFINITY or soft >= 64 << 20:
        return CheckResult("memlock", True, "RLIMIT_MEMLOCK is large enough")
    return CheckResult("memlock", False, f"RLIMIT_MEMLOCK is {soft} bytes",
                       "raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity)")


def run_checks() -> list[CheckResult]:
    return [check_kernel(), check_bpf_syscall(), check_perf_events(), check_tracefs(), check_headers(),
            check_bcc(), check_capabilities(), check_memlock()]
