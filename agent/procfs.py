"""Processes stage, reading side: pure parsers for /proc/PID files, and readers that take
the proc root as a parameter so unit tests point them at tests/fixtures/proc.

In: file contents (parsers) or (proc_root, pid) (readers). Out: plain values; a reader
returns None or "" when the process is gone or unreadable, never raises for that.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from symbolizer.model import Mapping

# Container ids in cgroup paths: docker (cgroupfs and systemd drivers), containerd (CRI),
# cri-o, podman (libpod), and bare 64-hex leaf directories under kubepods.
_CONTAINER_PATTERNS = (
    ("docker", re.compile(r"docker-([0-9a-f]{64})\.scope")),
    ("docker", re.compile(r"/docker/([0-9a-f]{64})(?:/|$)")),
    ("containerd", re.compile(r"cri-containerd-([0-9a-f]{64})\.scope")),
    ("cri-o", re.compile(r"crio-(?:conmon-)?([0-9a-f]{64})(?:\.scope)?")),
    ("podman", re.compile(r"libpod-(?:conmon-)?([0-9a-f]{64})(?:\.scope)?")),
    ("kubernetes", re.compile(r"/kubepods[^ ]*/([0-9a-f]{64})(?:/|$)")),
)

# The kubelet's pod cgroup: systemd driver "kubepods-burstable-pod<uid with _>.slice",
# cgroupfs driver "/kubepods/burstable/pod<uid>/".
_POD_UID = re.compile(r"kubepods[^/]*-pod([0-9a-f_]{8,36})\.slice|/kubepods(?:/[a-z]+)?/pod([0-9a-f-]{8,36})(?:/|$)")


@dataclass(frozen=True, slots=True)
class ContainerRef:
    runtime: str  # "docker", "containerd", "cri-o", "podman", "kubernetes"
    container_id: str


def parse_maps(text: str) -> tuple[Mapping, ...]:
    """Every line of /proc/PID/maps as a Mapping; malformed lines are skipped. Permissions and
    paths are interned: the registry holds the maps of every process, mostly the same files."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            start_s, end_s = parts[0].split("-", 1)
            major_s, minor_s = parts[3].split(":", 1)
            out.append(
                Mapping(
                    start=int(start_s, 16),
                    end=int(end_s, 16),
                    perms=sys.intern(parts[1]),
                    file_offset=int(parts[2], 16),
                    dev_major=int(major_s, 16),
                    dev_minor=int(minor_s, 16),
                    inode=int(parts[4]),
                    path=sys.intern(parts[5].strip()) if len(parts) > 5 else "",
                )
            )
        except ValueError:
            continue
    return tuple(out)


def parse_stat_start_time(text: str) -> int:
    """Field 22 (starttime, clock ticks since boot) of /proc/PID/stat; 0 if malformed.
    The comm field may hold spaces and parentheses, so split after the last ')'."""
    _, _, rest = text.rpartition(")")
    fields = rest.split()
    # rest starts at field 3 (state); starttime is field 22 -> index 19
    if len(fields) < 20:
        return 0
    try:
        return int(fields[19])
    except ValueError:
        return 0


def parse_cgroup(text: str) -> str:
    """The cgroup path that names the process's container or unit.

    Prefers a line that holds a container id (on hybrid hosts the v1 controllers may carry it
    while the v2 line is "/"), then the v2 line ("0::PATH"), then the first v1 path.
    """
    paths = []
    v2 = ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2]
        if parts[0] == "0" and parts[1] == "":
            v2 = path
        paths.append(path)
    for path in paths:
        if container_from_cgroup(path) is not None:
            return path
    if v2 and v2 != "/":
        return v2
    for path in paths:
        if path != "/":
            return path
    return v2 or (paths[0] if paths else "")


def container_from_cgroup(path: str) -> ContainerRef | None:
    for runtime, pattern in _CONTAINER_PATTERNS:
        m = pattern.search(path)
        if m:
            return ContainerRef(runtime, m.group(1))
    return None


def pod_uid_from_cgroup(path: str) -> str:
    """The Kubernetes pod uid (dashed) in a cgroup path; "" when there is none."""
    m = _POD_UID.search(path)
    if not m:
        return ""
    return (m.group(1) or m.group(2)).replace("_", "-")


def _read_text(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcFiles:
    """Raw reads of one process; None where the file could not be read."""

    stat: str | None
    comm: str | None
    cmdline: str | None
    cgroup: str | None
    maps: str | None
    exe: str


def read_process(proc_root: Path, pid: int) -> ProcFiles:
    base = proc_root / str(pid)
    try:
        exe = os.readlink(base / "exe")
    except OSError:
        exe = ""
    return ProcFiles(
        stat=_read_text(base / "stat"),
        comm=_read_text(base / "comm"),
        cmdline=_read_text(base / "cmdline"),
        cgroup=_read_text(base / "cgroup"),
        maps=_read_text(base / "maps"),
        exe=exe,
    )


def read_start_time(proc_root: Path, pid: int) -> int:
    text = _read_text(proc_root / str(pid) / "stat")
    return parse_stat_start_time(text) if text else 0


def read_maps(proc_root: Path, pid: int) -> tuple[Mapping, ...] | None:
    text = _read_text(proc_root / str(pid) / "maps")
    return parse_maps(text) if text is not None else None
