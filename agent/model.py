"""The plain values that pass between the agent's stages.

``pid`` always means the kernel's tgid (the process); ``tid`` a thread. Symbolizer values
(``Mapping``, ``Symbolized``, ``Frame``, ``Module``, ``FrameKind``) are re-exported from
``symbolizer.model`` because the symbolizer stage defines them and must not import the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from symbolizer.model import Frame, FrameKind, Mapping, Module, Symbolized

__all__ = [
    "Frame",
    "FrameKind",
    "Mapping",
    "Module",
    "ProcessInfo",
    "Profile",
    "ProfileSample",
    "Symbolized",
    "TargetProfile",
]


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What was known of one process incarnation when it was snapshotted."""

    pid: int
    incarnation: int  # BPF's first-sample time (ns, monotonic): with pid, the registry key
    start_time_ticks: int  # field 22 of /proc/PID/stat; 0 when it could not be read
    comm: str
    exe: str  # readlink of /proc/PID/exe, "" for kernel threads or when unreadable
    cmdline: tuple[str, ...]
    cgroup: str  # the v2 path (or the first v1 path) from /proc/PID/cgroup
    container_id: str  # 64-hex (or shorter runtime) id from the cgroup path, "" when none
    mappings: tuple[Mapping, ...]
    alive: bool = True  # False when the snapshot found the process already gone

    @property
    def is_kernel_thread(self) -> bool:
        return self.alive and not self.mappings and not self.exe


@dataclass(frozen=True, slots=True)
class ProfileSample:
    """One distinct stack of one thread group with how often it was sampled."""

    stack: tuple[Symbolized, ...]  # leaf first: kernel frames (if any), then user frames
    count: int
    labels: tuple[tuple[str, str], ...]  # string labels: comm, container_id, ...
    num_labels: tuple[tuple[str, int], ...] = ()  # numeric labels: pid
    process: ProcessInfo | None = field(default=None, compare=False)  # whose stack: for targets and labels


@dataclass(frozen=True)
class Profile:
    """One interval's samples, ready for any exporter."""

    samples: tuple[ProfileSample, ...]
    frequency_hz: int
    start_ns: int  # wall clock (time.time_ns()) at the start of the interval
    duration_ns: int
    host: str
    counters: dict[str, int] = field(default_factory=dict)  # taken, lost causes, ...

    @property
    def period_ns(self) -> int:
        return 1_000_000_000 // self.frequency_hz

    @property
    def total_samples(self) -> int:
        return sum(s.count for s in self.samples)


@dataclass(frozen=True)
class TargetProfile:
    """One target's share of an interval (a container, a systemd service or a process) with its
    series labels after relabelling (``service_name`` always set, no ``__``-prefixed names)."""

    labels: tuple[tuple[str, str], ...]
    profile: Profile
    key: str  # "container:<id>", "systemd:<unit>" or "process:<pid>": stable across intervals

    def label(self, name: str, default: str = "") -> str:
        return dict(self.labels).get(name, default)
