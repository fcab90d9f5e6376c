"""bpf_cost: what each BPF sampler costs per sample, hostflame's and bcc's side by side.

At 99 Hz a profiler's in-kernel cost is far below what the footprint benchmark's throughput
windows can resolve, so it is measured directly: ``hostflame run`` and ``profile-bpfcc -F 99``
are attached at the same time (same host, same moments, same workload: one ``throughput``
process per CPU for BENCH_FOOTPRINT_WINDOW s, default 10 here), with the kernel's BPF run-time
statistics on (``kernel.bpf_stats_enabled``, restored after). Per rep and profiler: the
``run_time_ns / run_cnt`` of its perf-event program (fdinfo of the program fds it holds)
over the workload, and what that is as a share of all CPUs at the sampling frequency.
perf record runs no BPF program and is not in this table (footprint's 999 Hz run compares all
three per sample, through throughput).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import Settings, artifacts_dir, build_dir, median, ratio
from tests.benchmarks.footprint import Profiler, bpf_fdinfo
from tests.benchmarks.output import Table, progress, say, write_result
from tests.fixtures.build import build_c

NAME = "bpf_cost"
PROFILERS = ("hostflame", "bcc")
BPF_PROG_TYPE_PERF_EVENT = 7
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def window_s(settings: Settings) -> float:
    return float(os.environ.get("BENCH_FOOTPRINT_WINDOW", "4" if settings.quick else "10"))


def perf_event_program_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the perf-event programs whose fds ``pid`` holds."""
    programs = {info["prog_id"]: info for info in bpf_fdinfo(pid, "prog")
                if int(info.get("prog_type", "0")) == BPF_PROG_TYPE_PERF_EVENT}  # one per program, however many fds
    return (sum(int(info.get("run_time_ns", "0")) for info in programs.values()),
            sum(int(info.get("run_cnt", "0")) for info in programs.values()))


def one_rep(settings: Settings, exe: Path, tmp: Path, rep: int) -> dict[str, dict[str, float]]:
    profilers = {which: Profiler(which, settings, tmp, f"rep{rep + 1}") for which in PROFILERS}
    try:
        for p in profilers.values():
            p.wait_ready()
        before = {w: perf_event_program_stats(p.proc.pid) for w, p in profilers.items()}
        started = time.monotonic()
        n = len(os.sched_getaffinity(0))
        copies = [subprocess.Popen([str(exe), f"{window_s(settings):g}"], stdout=subprocess.DEVNULL) for _ in range(n)]
        for c in copies:
            c.wait()
        seconds = time.monotonic() - started
        after = {w: perf_event_program_stats(p.proc.pid) for w, p in profilers.items()}
    finally:
        for p in profilers.values():
            p.stop()
    out: dict[str, dict[str, float]] = {}
    for which in PROFILERS:
        ns = after[which][0] - before[which][0]
        runs = after[which][1] - before[which][1]
        if runs <= 0:
            raise RuntimeError(f"{which}: its perf-event program did not run (bpf_stats_enabled off?)")
        out[which] = {"runs": runs, "us_per_run": ns / runs / 1000,
                      "percent_of_all_cpus": 100.0 * ratio(ns / 1e9, seconds * len(os.sched_getaffinity(0)))}
    return out


def run(settings: Settings) -> dict[str, Any]:
    tmp = artifacts_dir(settings, NAME)
    exe = build_c("throughput", build_dir(settings))
    old = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        reps = []
        for rep in range(settings.reps):
            progress(f"{NAME} rep {rep + 1}/{settings.reps}: hostflame and bcc at {settings.frequency_hz} Hz together, "
                     f"workload x{len(os.sched_getaffinity(0))} for {window_s(settings):g} s")
            reps.append(one_rep(settings, exe, tmp, rep))
    finally:
        STATS.write_text(old)
    medians = {w: {k: median([r[w][k] for r in reps]) for k in ("runs", "us_per_run", "percent_of_all_cpus")}
               for w in PROFILERS}
    ratios = [r["hostflame"]["us_per_run"] / r["bcc"]["us_per_run"] for r in reps]
    result: dict[str, Any] = {
        "name": NAME,
        "settings": {"reps": settings.reps, "frequency_hz": settings.frequency_hz, "window_s": window_s(settings)},
        "reps": reps,
        "medians": medians,
        "hostflame_over_bcc": {"per_rep": ratios, "median": median(ratios)},
        "targets": {},
    }
    result["json"] = str(write_result(settings, NAME, result))
    say(render(result))
    return result


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    table = Table(f"bpf_cost: BPF run time per sample, hostflame and bcc attached together, {s['window_s']:g} s of "
                  f"the throughput workload at {s['frequency_hz']} Hz, {s['reps']} reps (medians)",
                  ["profiler", "samples", "us per sample", "% of all CPUs"])
    for which, m in result["medians"].items():
        table.add(which, int(m["runs"]), m["us_per_run"], m["percent_of_all_cpus"])
    per_rep = ", ".join(f"{x:.2f}" for x in result["hostflame_over_bcc"]["per_rep"])
    return (f"{table.render()}\nhostflame / bcc per sample, rep by rep: {per_rep} "
            f"(median {result['hostflame_over_bcc']['median']:.2f})\n")
