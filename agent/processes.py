"""Processes stage: a registry of process incarnations, keyed by (pid, incarnation).

In: process events from BPF (first sample, exec, exit) and lookups from the drain.
Out: ``ProcessInfo`` snapshots (maps, exe, comm, cmdline, cgroup, start time) taken while
the process lived, kept until that incarnation's last samples have been drained, so a
process that exits before the drain is still symbolized. An incarnation begins at BPF's
first sample of a pid (or of its new image after exec), so a reused pid or an exec never
shares an entry with what came before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agent import procfs
from agent.bpf_abi import EVENT_EXEC, EVENT_EXIT, EVENT_NEW_PROCESS, ProcessEvent
from agent.model import ProcessInfo

log = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK")
# /proc start times have clock-tick resolution; allow that much (and a little) of slack.
_START_SLACK_NS = 3 * 1_000_000_000 // CLK_TCK
# Drains come about every second while new stacks keep arriving and at each interval's cut
# on a steady host, so a sweep comes every 30 s to every 30 intervals.
SWEEP_EVERY_DRAINS = 30
MAX_REFRESH_BACKOFF_DRAINS = 64  # a process whose stacks keep leaving its maps: re-read rarely


def boot_to_monotonic_ns() -> int:
    """CLOCK_BOOTTIME minus CLOCK_MONOTONIC: time the host spent suspended."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass(frozen=True, slots=True)
class RegistryStats:
    tracked: int
    snapshots: int
    snapshots_gone: int  # the process was gone (or its pid reused) when we looked
    late_snapshots: int  # first seen in a drain rather than through an event
    map_refreshes: int
    removed: int
    swept: int = 0  # ended by the sweep: the process was gone and no exit event said so


class ProcessRegistry:
    """Snapshots per incarnation; removal waits until the incarnation's samples are drained."""

    def __init__(self, proc_root: Path = Path("/proc"), on_snapshot: Callable[[ProcessInfo], None] | None = None):
        self._proc_root = proc_root
        self._on_snapshot = on_snapshot
        self._procs: dict[tuple[int, int], ProcessInfo] = {}
        self._ended_at_drain: dict[tuple[int, int], int] = {}  # key -> drain number when ended
        self._drains = 0
        self._refresh_due: dict[tuple[int, int], tuple[int, int]] = {}  # key -> (drain allowed, backoff)
        self._snapshots = self._gone = self._late = self._refreshes = self._removed = self._swept = 0

    # --- events --------------------------------------------------------------------------
    def on_event(self, event: ProcessEvent) -> ProcessInfo | None:
        key = (event.pid, event.incarnation)
        if event.kind == EVENT_NEW_PROCESS:
            if key not in self._procs:
                return self._snapshot(event.pid, event.incarnation, event.comm)
        elif event.kind in (EVENT_EXEC, EVENT_EXIT):
            if key not in self._procs:
                # Sampled but never snapshotted (lost event): too late to read its image,
                # but record what BPF told us so its samples keep their comm.
                self._procs[key] = self._gone_info(event.pid, event.incarnation, event.comm)
            self._ended_at_drain.setdefault(key, self._drains)
        return None

    # --- lookups from the drain ----------------------------------------------------------
    def lookup(self, pid: int, incarnation: int, comm: str) -> ProcessInfo:
        """The snapshot for this incarnation, taking one now if none exists (first sight)."""
        info = self._procs.get((pid, incarnation))
        if info is None:
            self._late += 1
            info = self._snapshot(pid, incarnation, comm)
        return info

    def refresh_maps(self, pid: int, incarnation: int) -> ProcessInfo | None:
        """Re-read the maps of a live incarnation (a library mapped after the snapshot);
        at most once per drain per incarnation, and after a re-read that found nothing new,
        1, 2, 4 ... up to MAX_REFRESH_BACKOFF_DRAINS drains later (a broken frame chain keeps
        yielding addresses in no mapping). None when nothing changed or it is gone."""
        key = (pid, incarnation)
        info = self._procs.get(key)
        due, backoff = self._refresh_due.get(key, (0, 1))
        if info is None or not info.alive or self._drains < due:
            return None
        self._refresh_due[key] = (self._drains + backoff, min(2 * backoff, MAX_REFRESH_BACKOFF_DRAINS))
        if not self._is_same_process(pid, incarnation):
            return None
        maps = procfs.read_maps(self._proc_root, pid)
        if not maps or maps == info.mappings:
            return None
        self._refresh_due[key] = (self._drains + 1, 1)
        self._refreshes += 1
        info = replace(info, mappings=maps)
        self._procs[key] = info
        if self._on_snapshot:
            self._on_snapshot(info)
        return info

    def end_drain(self) -> None:
        """Called after each drain: drop incarnations that ended before the previous drain,
        whose samples (in either generation) have now all been read."""
        self._drains += 1
        if self._drains % SWEEP_EVERY_DRAINS == 0:
            self._sweep()
        done = [k for k, d in self._ended_at_drain.items() if self._drains - d >= 2]
        for key in done:
            del self._ended_at_drain[key]
            self._procs.pop(key, None)
            self._refresh_due.pop(key, None)
            self._removed += 1

    def _sweep(self) -> None:
        """End incarnations whose process is gone without an exit event reaching us (a sample
        taken after the exit tracepoint, in the exiting task's last moments, starts one
        that nothing ends). One /proc/PID/stat read per tracked live incarnation."""
        for (pid, incarnation), info in list(self._procs.items()):
            key = (pid, incarnation)
            if info.alive and key not in self._ended_at_drain and not self._is_same_process(pid, incarnation):
                self._ended_at_drain[key] = self._drains
                self._swept += 1

    @property
    def stats(self) -> RegistryStats:
        return RegistryStats(
            tracked=len(self._procs),
            snapshots=self._snapshots,
            snapshots_gone=self._gone,
            late_snapshots=self._late,
            map_refreshes=self._refreshes,
            removed=self._removed,
            swept=self._swept,
        )

    # --- snapshots -----------------------------------------------------------------------
    def _is_same_process(self, pid: int, incarnation: int) -> bool:
        """True when /proc/PID is the process BPF first sampled at ``incarnation`` (ns,
        CLOCK_MONOTONIC): a process that started after that instant is a reuse of the pid."""
        ticks = procfs.read_start_time(self._proc_root, pid)
        if ticks == 0:
            return False
        start_monotonic_ns = ticks * 1_000_000_000 // CLK_TCK - boot_to_monotonic_ns()
        return start_monotonic_ns <= incarnation + _START_SLACK_NS

    def _gone_info(self, pid: int, incarnation: int, comm: str) -> ProcessInfo:
        self._gone += 1
        return ProcessInfo(
            pid=pid, incarnation=incarnation, start_time_ticks=0, comm=comm, exe="",
            cmdline=(), cgroup="", container_id="", mappings=(), alive=False,
        )

    def _snapshot(self, pid: int, incarnation: int, comm: str) -> ProcessInfo:
        files = procfs.read_process(self._proc_root, pid)
        ticks = procfs.parse_stat_start_time(files.stat) if files.stat else 0
        start_monotonic_ns = ticks * 1_000_000_000 // CLK_TCK - boot_to_monotonic_ns()
        if files.stat is None or files.maps is None or start_monotonic_ns > incarnation + _START_SLACK_NS:
            info = self._gone_info(pid, incarnation, comm)
        else:
            self._snapshots += 1
            cgroup = procfs.parse_cgroup(files.cgroup or "")
            container = procfs.container_from_cgroup(cgroup)
            info = ProcessInfo(
                pid=pid,
                incarnation=incarnation,
                start_time_ticks=ticks,
                comm=(files.comm or comm).strip() or comm,
                exe=files.exe,
                cmdline=tuple(a for a in (files.cmdline or "").split("\0") if a),
                cgroup=cgroup,
                container_id=container.container_id if container else "",
                mappings=procfs.parse_maps(files.maps),
            )
        self._procs[(pid, incarnation)] = info
        if not info.alive:  # gone already: no event will end it, so it ends with this drain
            self._ended_at_drain.setdefault((pid, incarnation), self._drains)
        if info.alive and self._on_snapshot:
            self._on_snapshot(info)
        return info
