"""Benchmark 3, run_overhead: what the continuous agent costs once it is running.

Workload: two ``split`` CPU burners (every CPU busy, so every tick is a sample to handle),
and tickers (``short_lived 0.005 1``: 5 ms of CPU a second each) until the host has 200
processes (BENCH_PROCESSES).
Per rep: ``hostflame run --interval 15 --frequency HZ --export-dir TMP`` for D seconds after
start-up (120 s; BENCH_QUICK: 30 s), then SIGTERM.

Measured: agent CPU excluding start-up: utime+stime(+cutime+cstime, + live descendants) from
/proc/PID/stat read when the log says "profiling every CPU" and again at the end, before
SIGTERM, as % of one CPU over that wall time (target <= 1 %); the same per 5 s slice, so
spikes at interval cuts show; RSS steady (median of VmRSS every 5 s after start-up), peak
(VmHWM at the end), PSS (/proc/PID/smaps_rollup, median of the same samples and at the end);
start-up wall and CPU; intervals logged, files written, exit status and time after SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import (
    HOSTFLAME,
    Settings,
    artifacts_dir,
    busy_percent,
    busy_workload,
    command_line,
    host_cpu_ticks,
    machine,
    median,
    proc_tree_cpu_s,
    pss_kb,
    ratio,
    status_kb,
)
from tests.benchmarks.output import Table, progress, say, target, write_result

NAME = "run_overhead"
TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MB = 60.0
SAMPLE_EVERY_S = 5.0
READY = "profiling every CPU"
# The cost at the asked frequency is what is measured: the resource governor would lower it.
NO_GOVERNOR = ("--cpu-budget", "0", "--memory-budget", "0")
HOST_PROCESSES = int(os.environ.get("BENCH_PROCESSES", "200"))  # live processes on the host, tickers fill up


def run_cmd(settings: Settings, export_dir: Path) -> list[str]:
    return [str(HOSTFLAME), "run", "--interval", f"{settings.run_interval_s:g}",
            "--frequency", str(settings.frequency_hz), "--export-dir", str(export_dir), *NO_GOVERNOR]


class Agent:
    """``hostflame run`` in the background, its log lines timestamped as they arrive."""

    def __init__(self, cmd: list[str]):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self.ready_cpu_s = float("nan")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))
            if READY in line and not self.ready.is_set():
                self.ready_cpu_s = proc_tree_cpu_s(self.proc.pid)
                self.ready.set()

    def log(self) -> str:
        return "".join(line for _, line in self.lines)

    def stop(self, timeout_s: float = 30) -> tuple[int, float]:
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code, time.monotonic() - sent


def one_rep(settings: Settings, rep: int, artifacts: Path) -> dict[str, Any]:
    export = artifacts / f"rep{rep + 1}"
    export.mkdir()
    cmd = run_cmd(settings, export)
    progress(f"{NAME} rep {rep + 1}/{settings.reps}: {command_line(cmd)} (for {settings.run_duration_s:g} s)")
    agent = Agent(cmd)
    pid = agent.proc.pid
    try:
        if not agent.ready.wait(120):
            raise RuntimeError(f"hostflame run never logged {READY!r}: {agent.log()[-2000:]}")
        t0 = time.monotonic()
        cpu0 = proc_tree_cpu_s(pid)
        host0 = host_cpu_ticks()
        slices: list[dict[str, float]] = []
        last_t, last_cpu = t0, cpu0
        while (now := time.monotonic()) - t0 < settings.run_duration_s:
            time.sleep(min(SAMPLE_EVERY_S, settings.run_duration_s - (now - t0)))
            if agent.proc.poll() is not None:
                raise RuntimeError(f"hostflame run exited {agent.proc.returncode}: {agent.log()[-2000:]}")
            t, cpu = time.monotonic(), proc_tree_cpu_s(pid)
            slices.append({"t_s": t - t0, "cpu_percent": 100.0 * ratio(cpu - last_cpu, t - last_t),
                           "rss_kb": status_kb(pid, "VmRSS"), "pss_kb": pss_kb(pid)})
            last_t, last_cpu = t, cpu
        t1, cpu1 = last_t, last_cpu
        host1 = host_cpu_ticks()
        hwm, pss_end = status_kb(pid, "VmHWM"), pss_kb(pid)
        threads = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("Threads:")))
    finally:
        code, stop_s = agent.stop()
    files = sorted(p.name for p in export.iterdir())
    (artifacts / f"rep{rep + 1}.log").write_text(agent.log())
    intervals = [line for _, line in agent.lines if "interval:" in line]
    ready_at = next(t for t, line in agent.lines if READY in line)
    return {
        "cpu_percent_of_one_cpu": 100.0 * ratio(cpu1 - cpu0, t1 - t0),
        "cpu_s": cpu1 - cpu0, "window_s": t1 - t0,
        "startup_wall_s": ready_at - agent.started, "startup_cpu_s": agent.ready_cpu_s,
        "rss_steady_kb": median([s["rss_kb"] for s in slices]),
        "rss_peak_kb": hwm,
        "pss_steady_kb": median([s["pss_kb"] for s in slices]),
        "pss_end_kb": pss_end,
        "threads": threads,
        "slices": slices,
        "host_busy_percent": busy_percent(host0, host1),
        "intervals_logged": len(intervals),
        "interval_lines": [line.strip() for line in intervals],
        "files_written": len(files),
        "exit_code": code,
        "stop_s": stop_s,
    }


METRICS = ("cpu_percent_of_one_cpu", "rss_steady_kb", "rss_peak_kb", "pss_steady_kb", "startup_wall_s",
           "startup_cpu_s", "stop_s", "host_busy_percent")


def run(settings: Settings) -> dict[str, Any]:
    reps: list[dict[str, Any]] = []
    artifacts = artifacts_dir(settings, NAME)
    with busy_workload(settings, splits=len(os.sched_getaffinity(0)), processes=HOST_PROCESSES) as workload:
        for rep in range(settings.reps):
            reps.append(one_rep(settings, rep, artifacts))
            workload.check_alive()
    med = {m: median([r[m] for r in reps]) for m in METRICS}
    med["max_slice_cpu_percent"] = median([max(s["cpu_percent"] for s in r["slices"]) for r in reps])
    result = {
        "name": NAME,
        "machine": machine(),
        "settings": {"reps": settings.reps, "frequency_hz": settings.frequency_hz,
                     "interval_s": settings.run_interval_s, "duration_s": settings.run_duration_s,
                     "sample_every_s": SAMPLE_EVERY_S},
        "commands": {"workload": workload.commands,
                     "agent": command_line(run_cmd(settings, Path("TMP"))) + "  (SIGTERM after the window)",
                     "cpu": "/proc/PID/stat utime+stime+cutime+cstime (plus live descendants), "
                            f"from the {READY!r} log line to the end",
                     "memory": "/proc/PID/status VmRSS (every 5 s), VmHWM (end); /proc/PID/smaps_rollup Pss"},
        "reps": reps,
        "medians": med,
        "targets": {"cpu": target(f"agent CPU <= {TARGET_CPU_PERCENT:g} % of one CPU after start-up (median)",
                                  med["cpu_percent_of_one_cpu"], med["cpu_percent_of_one_cpu"] <= TARGET_CPU_PERCENT),
                    "rss": target(f"agent RSS steady <= {TARGET_RSS_MB:g} MB (median)", med["rss_steady_kb"] / 1024,
                                  med["rss_steady_kb"] / 1024 <= TARGET_RSS_MB)},
    }
    result["json"] = str(write_result(settings, NAME, result))
    say(render(result))
    return result


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    table = Table(
        f"run_overhead: hostflame run at {s['frequency_hz']} Hz, interval {s['interval_s']:g} s, "
        f"{s['duration_s']:g} s after start-up, {s['reps']} reps",
        ["rep", "CPU % of 1 CPU", "max 5s-slice %", "RSS steady MB", "RSS peak MB", "PSS steady MB",
         "start-up s", "start-up CPU s", "intervals", "files", "exit", "stop s"],
    )
    for i, r in enumerate(result["reps"], 1):
        table.add(str(i), r["cpu_percent_of_one_cpu"], max(x["cpu_percent"] for x in r["slices"]),
                  r["rss_steady_kb"] / 1024, r["rss_peak_kb"] / 1024, r["pss_steady_kb"] / 1024,
                  r["startup_wall_s"], r["startup_cpu_s"], r["intervals_logged"], r["files_written"],
                  r["exit_code"], r["stop_s"])
    m = result["medians"]
    table.add("median", m["cpu_percent_of_one_cpu"], m["max_slice_cpu_percent"], m["rss_steady_kb"] / 1024,
              m["rss_peak_kb"] / 1024, m["pss_steady_kb"] / 1024, m["startup_wall_s"], m["startup_cpu_s"],
              "", "", "", m["stop_s"])
    t = result["targets"]["cpu"]
    return f"{table.render()}\ntarget {t['target']}: {'MET' if t['met'] else 'MISSED'} ({t['value']:.2f} %)\n"
