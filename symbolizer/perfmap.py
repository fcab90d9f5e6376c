"""Symbolizer stage: JIT frames named from perf maps (``/tmp/perf-PID.map``).

In: a pid (the host's), its runtime address in JIT code, and the proc root. Out: the name
the JIT wrote for that address, or None. Runtimes (Node ``--perf-basic-prof``, Java perf-map
agents, Python 3.12 ``-X perf``) append ``START SIZE NAME`` lines (hex, ``0x`` optional) to
``/tmp/perf-<pid>.map`` where ``<pid>`` is the pid *inside the process's pid namespace* (the
last ``NSpid`` field of /proc/PID/status) and ``/tmp`` is the process's own (read through
/proc/PID/root, never leaving it: ``symbolizer.files``).

A map is read whole (capped) and parsed into sorted columns; it is read again when an address
misses and the file grew or changed since, at most once per ``REREAD_S`` seconds per process.
Later lines win over earlier ones for the same start (code moved or recompiled).
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field

from symbolizer.errors import SymbolizerError
from symbolizer.files import open_beneath

MAX_MAP_SIZE = 64 << 20
MAX_STATUS_SIZE = 1 << 16
MAX_NAME = 1024
REREAD_S = 1.0
MAX_PROCESSES = 4096


@dataclass(slots=True)
class PerfMap:
    """Sorted (start, end, name) columns of one perf map."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def lookup(self, addr: int) -> str | None:
        at = bisect.bisect_right(self.starts, addr) - 1
        if at >= 0 and addr < self.ends[at]:
            return self.names[at]
        return None


def parse_perf_map(data: bytes) -> PerfMap:
    """Parse a perf map; malformed lines are skipped, and so is an unterminated last line
    (the runtime may be writing it right now: its name could be cut short)."""
    entries: dict[int, tuple[int, str]] = {}
    for raw in data[: data.rfind(b"\n") + 1].split(b"\n"):
        parts = raw.split(None, 2)
        if len(parts) != 3:
            continue
        try:
            start, size = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            continue
        if size <= 0 or start < 0:
            continue
        entries[start] = (start + size, parts[2][:MAX_NAME].decode("utf-8", "replace").strip())
    out = PerfMap()
    for start in sorted(entries):
        end, name = entries[start]
        out.starts.append(start)
        out.ends.append(end)
        out.names.append(name)
    return out


def namespace_pid(status: bytes) -> int | None:
    """The innermost pid from a /proc/PID/status text (``NSpid``), None when absent."""
    for line in status.split(b"\n"):
        if line.startswith(b"NSpid:"):
            fields = line.split()[1:]
            try:
                return int(fields[-1]) if fields else None
            except ValueError:
                return None
    return None


@dataclass(slots=True)
class _Entry:
    perf_map: PerfMap | None
    stamp: tuple[int, int] | None  # (size, mtime_ns) when read
    checked: float  # monotonic time of the last look


class PerfMaps:
    """Perf maps of live processes, read lazily through ``proc_root``."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self._proc_root = proc_root.rstrip("/") or "/"
        self._maps: dict[int, _Entry] = {}
        self.reads = 0
        self.failures = 0

    def lookup(self, pid: int, addr: int) -> str | None:
        entry = self._maps.get(pid)
        now = time.monotonic()
        if entry is not None and entry.perf_map is not None:
            name = entry.perf_map.lookup(addr)
            if name is not None:
                return name
        if entry is not None and now - entry.checked < REREAD_S:
            return None
        entry = self._read(pid, entry, now)
        return entry.perf_map.lookup(addr) if entry.perf_map is not None else None

    def has_map(self, pid: int) -> bool:
        entry = self._maps.get(pid)
        return entry is not None and entry.perf_map is not None

    def forget(self) -> None:
        """Drop every map (processes may have gone); call once per interval."""
        self._maps.clear()

    def _read(self, pid: int, entry: _Entry | None, now: float) -> _Entry:
        if entry is None:
            if len(self._maps) >= MAX_PROCESSES:
                self._maps.clear()
            entry = _Entry(None, None, now)
            self._maps[pid] = entry
        entry.checked = now
        base = f"{self._proc_root}/{pid}"
        try:
            with open(f"{base}/status", "rb") as status:
                nspid = namespace_pid(status.read(MAX_STATUS_SIZE))
            if nspid is None:
                return entry
            fd = open_beneath(f"{base}/root", f"/tmp/perf-{nspid}.map", MAX_MAP_SIZE)
        except (OSError, SymbolizerError):
            return entry
        try:
            st = os.fstat(fd)
            stamp = (st.st_size, st.st_mtime_ns)
            if stamp == entry.stamp:
                return entry
            chunks, remaining = [], st.st_size
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError:
            self.failures += 1
            return entry
        finally:
            os.close(fd)
        entry.perf_map = parse_perf_map(b"".join(chunks))
        entry.stamp = stamp
        self.reads += 1
        return entry
