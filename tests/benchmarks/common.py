"""Plumbing shared by the benchmarks: knobs, machine facts, workloads, measured runs, pprof reads.

Nothing here types in a number it reports: every value comes from a process's rusage, /proc,
or Google pprof reading a profile. Knobs come from the environment (see README.md).
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.build import build_c
from tests.pprof_cli import Trace, run_pprof, traces

REPO = Path(__file__).resolve().parents[2]
HOSTFLAME = REPO / ".venv" / "bin" / "hostflame"
PPROF = REPO / ".cache" / "bin" / "pprof"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Settings:
    """What the environment asked for. BENCH_QUICK=1 is a smoke run: one rep, short windows."""

    reps: int
    quick: bool
    frequency_hz: int
    record_duration_s: float
    run_duration_s: float
    run_interval_s: float
    out_dir: Path
    only: tuple[str, ...]

    @classmethod
    def from_env(cls) -> Settings:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        reps = int(os.environ.get("BENCH_REPS", "1" if quick else "3"))
        return cls(
            reps=max(1, reps),
            quick=quick,
            frequency_hz=int(os.environ.get("BENCH_FREQUENCY", "99")),
            record_duration_s=float(os.environ.get("BENCH_RECORD_DURATION", "5" if quick else "10")),
            run_duration_s=float(os.environ.get("BENCH_RUN_DURATION", "30" if quick else "120")),
            run_interval_s=float(os.environ.get("BENCH_RUN_INTERVAL", "15")),
            out_dir=Path(os.environ.get("BENCH_OUT", str(REPO / "out" / "bench"))),
            only=tuple(n for n in os.environ.get("BENCH_ONLY", "").replace(",", " ").split() if n),
        )


def _run_text(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare these numbers with another machine's."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "online_cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "cpu_model": model,
        "mem_total_kb": mem_kb,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": sys.version.split()[0],
        "bcc": _run_text("dpkg-query", "-W", "-f=${Version}", "python3-bpfcc"),
        "hostflame_commit": _run_text("git", "-C", str(REPO), "rev-parse", "HEAD"),
        # the venv runs the working tree: uncommitted changes to the profiler are part of what ran
        "hostflame_uncommitted": _run_text("git", "-C", str(REPO), "status", "--porcelain", "--",
                                           "agent", "symbolizer", "bpf").splitlines(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def command_line(cmd: Sequence[str], stdout: Path | None = None) -> str:
    text = shlex.join(str(c) for c in cmd)
    return f"{text} > {stdout}" if stdout else text


# --- the host's CPU, as /proc/stat counts it --------------------------------------------------

def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100.0 * ratio(after[0] - before[0], after[1] - before[1])


# --- one process's CPU and memory from /proc --------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    """utime+stime of every thread, plus waited-for children (cutime+cstime), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2:].split()
    return sum(int(v) for v in rest[11:15]) / CLK_TCK


def proc_tree_cpu_s(pid: int) -> float:
    """proc_cpu_s of pid and every live descendant (helpers it may have started)."""
    total = proc_cpu_s(pid)
    for child in descendants(pid):
        try:
            total += proc_cpu_s(child)
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise KeyError("Pss")


# --- workloads --------------------------------------------------------------------------------

@dataclass
class Workload:
    """Processes keeping the CPUs busy; ``comms`` are the names they sample under."""

    procs: list[subprocess.Popen[bytes]]
    commands: list[str]
    comms: frozenset[str]

    def check_alive(self) -> None:
        dead = [c for p, c in zip(self.procs, self.commands, strict=True) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"workload died during the benchmark: {dead}")


def artifacts_dir(settings: Settings, name: str) -> Path:
    """out/bench/<name>/: this benchmark's profiles and logs, kept for inspection, emptied first."""
    path = settings.out_dir / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def build_dir(settings: Settings) -> Path:
    path = settings.out_dir / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def busy_workload(settings: Settings, splits: int = 2, shell_loop: bool = False,
                  processes: int = 0) -> Iterator[Workload]:
    """``splits`` copies of tests/fixtures/c/split.c (CPU burners with frame pointers), plus
    enough tickers (tests/fixtures/c/short_lived.c 0.005 1: 5 ms of CPU a second each) to
    bring the host to ``processes`` processes, plus
    optionally a shell that execs /bin/true in a loop (short-lived processes, ld.so and libc
    frames). Each runs in its own session so it is killed with everything it started."""
    split = build_c("split", build_dir(settings))
    commands = [shlex.join([str(split), "36000"])] * splits
    comms = {"split"}
    if shell_loop:
        commands.append("sh -c 'while :; do /bin/true; done'")
        comms |= {"sh", "true"}
    tickers = max(0, processes - len(commands) - sum(1 for p in Path("/proc").iterdir() if p.name.isdigit()))
    if tickers:
        commands += [shlex.join([str(build_c("short_lived", build_dir(settings))), "0.005", "1"])] * tickers
        comms |= {"short_lived"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            procs.append(subprocess.Popen(shlex.split(command), start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let them get going before anything is measured
        workload = Workload(procs, commands, frozenset(comms))
        workload.check_alive()
        yield workload
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


# --- a profiler run, measured ----------------------------------------------------------------

@dataclass
class Measured:
    """One finished process: its own rusage (children it waited for included), wall time,
    and when (and at what CPU cost) it logged the marker line, if one was given."""

    returncode: int
    user_s: float
    sys_s: float
    wall_s: float
    maxrss_kb: int
    stderr: str
    marker_wall_s: float | None = None
    marker_cpu_s: float | None = None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def perf_event_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]"
        except OSError:
            pass
    return count


def run_measured(cmd: Sequence[str], *, stdout: Path | None = None, env: dict[str, str] | None = None,
                 marker: str | None = None, attach_fds: int | None = None, timeout_s: float = 300) -> Measured:
    """Run cmd to the end, reaping it with os.wait4 for its rusage (user+sys of the process and
    of the children it waited for: compilers, helpers). The end of start-up is when stderr
    shows ``marker``, or when the process holds ``attach_fds`` perf-event fds (polled every
    50 ms: for a profiler that says nothing when it starts sampling)."""
    out = stdout.open("wb") if stdout else subprocess.DEVNULL
    started = time.monotonic()
    proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.PIPE, env=env)
    lines: list[str] = []
    marker_at: list[tuple[float, float]] = []

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if marker and not marker_at and marker in line:
                try:
                    marker_at.append((time.monotonic() - started, proc_tree_cpu_s(proc.pid)))
                except OSError:
                    pass

    def watch() -> None:
        while proc.poll() is None and not marker_at:
            try:
                if attach_fds is not None and perf_event_fds(proc.pid) >= attach_fds:
                    marker_at.append((time.monotonic() - started, proc_tree_cpu_s(proc.pid)))
                    return
            except OSError:
                return
            time.sleep(0.05)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watcher = threading.Thread(target=watch, daemon=True)
    if attach_fds is not None:
        watcher.start()
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        if stdout:
            out.close()  # type: ignore[union-attr]
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    return Measured(
        returncode=proc.returncode, user_s=usage.ru_utime, sys_s=usage.ru_stime, wall_s=wall,
        maxrss_kb=usage.ru_maxrss, stderr="".join(lines),
        marker_wall_s=marker_at[0][0] if marker_at else None,
        marker_cpu_s=marker_at[0][1] if marker_at else None,
    )


def hostflame_record_cmd(settings: Settings, output: Path, top: int | None = 0) -> list[str]:
    """``hostflame record``; top=None keeps the CLI's default top table (printed on stdout)."""
    return [str(HOSTFLAME), "record", "--duration", f"{settings.record_duration_s:g}",
            "--frequency", str(settings.frequency_hz), *(["--top", str(top)] if top is not None else []),
            "-o", str(output)]


# --- reading a pprof file with Google pprof ---------------------------------------------------

def pprof_samples(path: Path) -> list[Trace]:
    """Samples as Google pprof reads them, with hostflame's own names (-symbolize=none, so
    pprof names nothing that hostflame left unnamed)."""
    return traces(PPROF, path)


def pprof_comments(path: Path) -> dict[str, str]:
    """``key=value`` comments of a hostflame profile (``taken``, ``idle``, ...)."""
    result: dict[str, str] = {}
    for line in run_pprof(PPROF, "-comments", "-symbolize=none", path).splitlines():
        for word in line.replace("hostflame:", "").split():
            if "=" in word:
                key, value = word.split("=", 1)
                result[key] = value
    return result


def pprof_duration_s(path: Path) -> float:
    for line in run_pprof(PPROF, "-raw", "-symbolize=none", path).splitlines():
        if line.startswith("Duration:"):
            return float(line.split()[1])
    return float("nan")
