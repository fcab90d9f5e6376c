"""Benchmark 4, footprint: what each profiler costs the host, side by side in one run.

Part 1, throughput: one ``throughput`` process per CPU (tests/fixtures/c/throughput.c: a fixed
unit of integer work repeated for W s, printing the units done) under each of: no profiler;
``hostflame run --frequency 99``; ``profile-bpfcc -F 99``; ``perf record -F 99 -a -g -o
/dev/shm/...``. Each profiler is started first and judged ready (hostflame: its "profiling
every CPU" line; bcc and perf: one perf-event fd per CPU, then 1 s), then the workload runs,
first unmeasured for BENCH_FOOTPRINT_WARMUP s (default: one hostflame interval and 2 s, so the
agent's first cut and first symbolization are behind it), then measured for W s; the
no-profiler windows get the same warm-up.
Every profiler window sits between two no-profiler windows (none, p1, none, p2, none, p3,
none; the profilers' order rotates every rep), because the host's speed drifts by more than a
profiler costs. Per run: workload ops/s (sum over copies) and its ratio to the mean of the
no-profiler windows around it, and ops per CPU second the workload got (wait4 rusage; steadier on a shared host, and
still charged with the sampling interrupts and BPF program, which run on the workload's time);
profiler CPU seconds during the workload (/proc/PID/stat utime+stime+cutime+cstime,
live descendants included), at start-up, and in all (wait4 rusage at exit: bcc and perf do
their symbolizing or writing after sampling stops); RSS steady (median VmRSS, every second) and
peak (VmHWM); for hostflame also PSS and USS (smaps_rollup, read once after the workload
ended: walking the agent's page tables every second would be charged to hostflame's window
only) and its BPF map memory (fdinfo memlock of its bpf-map fds). hostflame is compared with
each peer rep by rep: the median of the differences of throughput ratio, the reps it did no
worse, a sign test.

Part 2, idle: ``hostflame run`` with no workload started: agent CPU seconds per minute.
Part 3, churn: ``sh -c 'while :; do /bin/true; done'`` (hundreds of execs per second, counted
from /proc/stat ``processes``): agent CPU %, and of the samples whose comm is ``true``, the
share of frames named and the share whose leaf is named (Google pprof reads the profiles).
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.benchmarks.common import (
    HOSTFLAME,
    PPROF,
    Settings,
    artifacts_dir,
    build_dir,
    busy_percent,
    command_line,
    host_cpu_ticks,
    machine,
    median,
    perf_event_fds,
    pprof_samples,
    proc_tree_cpu_s,
    ratio,
    status_kb,
)
from tests.benchmarks.output import Table, progress, say, target, write_result
from tests.benchmarks.run_overhead import NO_GOVERNOR, READY
from tests.benchmarks.vs_bcc import HOSTFLAME_UNNAMED_PREFIXES, FrameShare, bcc_env, is_unnamed
from tests.fixtures.build import build_c

NAME = "footprint"
PROFILERS = ("none", "hostflame", "bcc", "perf")
TARGET_RATIO = 0.99
PERF_DATA = Path("/dev/shm/hostflame-bench-perf.data")


def window_s(settings: Settings) -> float:
    return float(os.environ.get("BENCH_FOOTPRINT_WINDOW", "8" if settings.quick else "20"))


def warmup_s(settings: Settings) -> float:
    """Workload run before each measured window, profiler attached: past hostflame's first cut
    (its first symbolization of the workload, kernel and harness is start-up, as bcc's compile
    is), so every window measures what a profiler costs once running."""
    default = "2" if settings.quick else f"{settings.run_interval_s + 2:g}"
    return float(os.environ.get("BENCH_FOOTPRINT_WARMUP", default))


def long_window_s(settings: Settings) -> float:
    return float(os.environ.get("BENCH_FOOTPRINT_LONG", "20" if settings.quick else "60"))


def smaps_kb(pid: int) -> dict[str, int]:
    """Rss, Pss and USS (Private_Clean + Private_Dirty) from /proc/PID/smaps_rollup."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return {"rss_kb": values.get("Rss", 0), "pss_kb": values.get("Pss", 0),
            "uss_kb": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)}


def bpf_fdinfo(pid: int, kind: str) -> Iterator[dict[str, str]]:
    """The fdinfo fields (``name: value``, values stripped) of each ``anon_inode:bpf-KIND`` fd
    (``map``, ``prog``) that ``pid`` holds; fds closed meanwhile are skipped."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != f"anon_inode:bpf-{kind}":
                continue
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        yield {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def bpf_map_memlock_bytes(pid: int) -> int:
    return sum(int(info.get("memlock", "0")) for info in bpf_fdinfo(pid, "map"))


def profiler_cmd(which: str, settings: Settings, export: Path) -> list[str]:
    freq = str(settings.frequency_hz)
    if which == "hostflame":
        return [str(HOSTFLAME), "run", "--frequency", freq, "--interval", f"{settings.run_interval_s:g}",
                "--export-dir", str(export), *NO_GOVERNOR]
    if which == "bcc":
        return [shutil.which("profile-bpfcc") or "/usr/sbin/profile-bpfcc", "-F", freq, "-f", "3600"]
    return ["perf", "record", "-F", freq, "-a", "-g", "-q", "-o", str(PERF_DATA)]


class Profiler:
    """One profiler in the background, in its own session; ``ready`` waits for start-up."""

    def __init__(self, which: str, settings: Settings, tmp: Path, tag: str):
        self.which = which
        self.log = tmp / f"{which}-{tag}.log"
        n = len(os.sched_getaffinity(0))
        self.export = tmp / f"hostflame-{tag}"
        if which == "hostflame":
            self.export.mkdir()
        self.cmd = profiler_cmd(which, settings, self.export)
        env = bcc_env() if which == "bcc" else None
        self.started = time.monotonic()
        out = (tmp / f"{which}-{tag}.out").open("wb")
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=self.log.open("wb"), env=env,
                                     start_new_session=True)
        self.cpus = n
        self.startup_wall_s = self.startup_cpu_s = self.total_cpu_s = float("nan")

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{command_line(self.cmd)} exited {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-1500:]}")
            if self.which == "hostflame":
                ready = READY in self.log.read_text(errors="replace")
            else:
                ready = perf_event_fds(self.proc.pid) >= self.cpus
            if ready:
                if self.which != "hostflame":
                    time.sleep(1.0)  # its start-up after opening events (bcc: buffers; perf: threads)
                self.startup_wall_s = time.monotonic() - self.started
                self.startup_cpu_s = proc_tree_cpu_s(self.proc.pid)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{command_line(self.cmd)} not ready within {timeout_s:g} s")

    def stop(self, timeout_s: float = 60) -> int:
        """Ask it to finish (hostflame SIGTERM, the others SIGINT: they write their output
        then) and reap it with wait4; ``total_cpu_s`` is then its whole life's CPU."""
        self.proc.send_signal(signal.SIGTERM if self.which == "hostflame" else signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.total_cpu_s = usage.ru_utime + usage.ru_stime
        return self.proc.returncode


def run_throughput(exe: Path, seconds: float, profiler: Profiler | None, warmup: float = 0.0) -> dict[str, Any]:
    """The workload, one copy per CPU, while sampling the profiler's memory every second;
    first, unmeasured, ``warmup`` seconds of it (copies of their own, then reaped)."""
    n = len(os.sched_getaffinity(0))
    if warmup > 0:
        for warm in [subprocess.Popen([str(exe), f"{warmup:g}"], stdout=subprocess.DEVNULL) for _ in range(n)]:
            warm.wait()
    pid = profiler.proc.pid if profiler else 0
    cpu0 = proc_tree_cpu_s(pid) if pid else 0.0
    host0 = host_cpu_ticks()
    procs = [subprocess.Popen([str(exe), f"{seconds:g}"], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    rss: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if pid and profiler and profiler.proc.poll() is None:
            rss.append(status_kb(pid, "VmRSS"))  # every profiler alike: a cheap read
    outputs, workload_cpu_s = [], 0.0
    for p in procs:  # reaped with wait4 for each copy's own CPU time
        assert p.stdout is not None
        outputs.append(p.stdout.read().split())
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        workload_cpu_s += usage.ru_utime + usage.ru_stime
    ops = sum(int(o[0]) for o in outputs)
    result: dict[str, Any] = {
        "ops_per_s": sum(int(o[0]) / float(o[1]) for o in outputs),
        # Per CPU second the workload got: insensitive to other tenants taking CPU time, still
        # charged with the sampling interrupts and BPF program (they run on its time).
        "ops_per_cpu_s": ratio(ops, workload_cpu_s),
        "host_busy_percent": busy_percent(host0, host_cpu_ticks()),
    }
    if profiler:
        result.update({
            "profiler_cpu_s": proc_tree_cpu_s(pid) - cpu0,
            "startup_cpu_s": profiler.startup_cpu_s, "startup_wall_s": profiler.startup_wall_s,
            "rss_steady_kb": median(rss) if rss else float("nan"), "rss_peak_kb": status_kb(pid, "VmHWM"),
        })
        if profiler.which == "hostflame" and profiler.proc.poll() is None:
            # Once, after the workload ended: smaps_rollup walks the agent's page tables (about
            # 0.4 ms of this process's CPU a read), which no peer's window would pay.
            mem = smaps_kb(pid)
            result.update({"pss_steady_kb": mem["pss_kb"], "uss_steady_kb": mem["uss_kb"],
                           "bpf_map_bytes": bpf_map_memlock_bytes(pid)})
    return result


def throughput_rep(settings: Settings, exe: Path, tmp: Path, rep: int) -> dict[str, dict[str, Any]]:
    """One window per profiler, each between two no-profiler windows (none, p1, none, p2,
    none, p3, none; the profilers' order rotates every rep). A profiler's ratios are to the
    mean of the two windows around it: the host's speed drifts by a few per cent over
    minutes, more than a profiler costs, and a bracket cancels the drift."""
    k = rep % (len(PROFILERS) - 1)
    profilers = PROFILERS[1 + k:] + PROFILERS[1:1 + k]
    sequence = ["none"]
    for which in profilers:
        sequence += [which, "none"]
    runs: list[dict[str, Any]] = []
    for i, which in enumerate(sequence):
        progress(f"{NAME} rep {rep + 1}/{settings.reps}, window {i + 1}/{len(sequence)}: workload "
                 f"x{len(os.sched_getaffinity(0))} for {warmup_s(settings):g} + {window_s(settings):g} s under {which}")
        profiler = None if which == "none" else Profiler(which, settings, tmp, f"rep{rep + 1}")
        try:
            if profiler:
                profiler.wait_ready()
            runs.append(run_throughput(exe, window_s(settings), profiler, warmup_s(settings)))
        finally:
            if profiler:
                if len(runs) == i:  # it failed before its window ended
                    runs.append({})
                runs[i]["exit_code"] = profiler.stop()
                runs[i]["total_cpu_s"] = profiler.total_cpu_s
        PERF_DATA.unlink(missing_ok=True)
    ratios = {"ops_per_s": "throughput_ratio", "ops_per_cpu_s": "per_cpu_ratio"}
    baselines = runs[0::2]
    none: dict[str, Any] = {m: median([b[m] for b in baselines]) for m in (*ratios, "host_busy_percent")}
    none.update({r: 1.0 for r in ratios.values()}, baseline_ops_per_s=[b["ops_per_s"] for b in baselines])
    out: dict[str, dict[str, Any]] = {"none": none}
    for i in range(1, len(sequence), 2):
        before, values, after = runs[i - 1], runs[i], runs[i + 1]
        for metric, name in ratios.items():
            values[name] = ratio(values[metric], (before[metric] + after[metric]) / 2)
        out[sequence[i]] = values
    return out


def paired(reps: list[dict[str, dict[str, Any]]], peer: str) -> dict[str, Any]:
    """hostflame's throughput ratio minus ``peer``'s, rep by rep: the median difference, the
    reps hostflame did no worse, and a two-sided sign test's p (ties left out): below 0.05,
    a difference this one-sided is unlikely to be the host's noise."""
    diffs = [r["hostflame"]["throughput_ratio"] - r[peer]["throughput_ratio"] for r in reps]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    n = wins + losses
    tail = sum(math.comb(n, j) for j in range(min(wins, losses) + 1)) / 2**n if n else 1.0
    return {"median_difference": median(diffs), "no_worse_reps": len(diffs) - losses, "reps": len(diffs),
            "sign_test_p": min(1.0, 2 * tail), "differences": diffs}


def forks_total() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    return 0


def long_run(settings: Settings, tmp: Path, tag: str, churn: bool) -> dict[str, Any]:
    """``hostflame run`` for the long window, optionally with the /bin/true loop."""
    progress(f"{NAME}: hostflame run for {long_window_s(settings):g} s, {'exec churn' if churn else 'idle host'}")
    profiler = Profiler("hostflame", settings, tmp, tag)
    loop = None
    try:
        profiler.wait_ready()
        time.sleep(5.0 if settings.quick else settings.run_interval_s + 5)  # past warm-up and the first cut
        if churn:
            loop = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"], start_new_session=True)
        t0, cpu0, forks0, host0 = time.monotonic(), proc_tree_cpu_s(profiler.proc.pid), forks_total(), host_cpu_ticks()
        time.sleep(long_window_s(settings))
        t1, cpu1, forks1 = time.monotonic(), proc_tree_cpu_s(profiler.proc.pid), forks_total()
        mem = smaps_kb(profiler.proc.pid)
        host1 = host_cpu_ticks()
    finally:
        if loop:
            os.killpg(loop.pid, signal.SIGKILL)
            loop.wait()
        code = profiler.stop()
    result: dict[str, Any] = {
        "cpu_percent_of_one_cpu": 100.0 * ratio(cpu1 - cpu0, t1 - t0),
        "cpu_s_per_minute": 60.0 * ratio(cpu1 - cpu0, t1 - t0),
        "forks_per_s": ratio(forks1 - forks0, t1 - t0), "host_busy_percent": busy_percent(host0, host1),
        **mem, "exit_code": code,
    }
    if churn:
        result.update(true_naming(profiler.export))
    return result


def true_naming(export: Path, batch: int = 400) -> dict[str, Any]:
    """Of the samples of comm ``true`` in every profile written: frames named, leaves named.
    Exec churn writes thousands of small files (every sampled ``true`` process is a target):
    Google pprof merges them ``batch`` at a time (``-proto``), and each merged profile is
    read once."""
    share = FrameShare()
    samples = leaf_named = 0
    files = sorted(export.glob("*.pb.gz"))
    merged = export.parent / f"{export.name}-merged.pb.gz"
    for start in range(0, len(files), batch):
        proc = subprocess.run([str(PPROF), "-proto", "-symbolize=none", *map(str, files[start:start + batch])],
                              capture_output=True, timeout=600, check=True)
        merged.write_bytes(proc.stdout)
        for stack, count, labels in pprof_samples(merged):
            comm = dict(labels).get("comm", "")
            share.add(comm, list(stack), count, HOSTFLAME_UNNAMED_PREFIXES, comm == "true")
            if comm == "true":
                samples += count
                leaf_named += count if stack and not is_unnamed(stack[0], HOSTFLAME_UNNAMED_PREFIXES) else 0
    return {"true_samples": samples, "true_frames_named_percent": 100.0 * ratio(share.workload_named,
                                                                                share.workload_frames),
            "true_leaf_named_percent": 100.0 * ratio(leaf_named, samples)}


METRICS = ("ops_per_s", "throughput_ratio", "ops_per_cpu_s", "per_cpu_ratio", "profiler_cpu_s", "startup_cpu_s",
           "total_cpu_s", "rss_steady_kb",
           "rss_peak_kb", "pss_steady_kb", "uss_steady_kb", "bpf_map_bytes", "host_busy_percent")


def run(settings: Settings) -> dict[str, Any]:
    tmp = artifacts_dir(settings, NAME)
    exe = build_c("throughput", build_dir(settings))
    reps = [throughput_rep(settings, exe, tmp, rep) for rep in range(settings.reps)]
    med = {which: {m: median([r[which][m] for r in reps if m in r[which]]) for m in METRICS
                   if any(m in r[which] for r in reps)} for which in PROFILERS}
    idle = long_run(settings, tmp, "idle", churn=False)
    churn = long_run(settings, tmp, "churn", churn=True)
    hf = med["hostflame"]["throughput_ratio"]
    vs = {peer: paired(reps, peer) for peer in PROFILERS[2:]}
    worst = min(v["median_difference"] for v in vs.values())
    result = {
        "name": NAME,
        "machine": machine(),
        "settings": {"reps": settings.reps, "frequency_hz": settings.frequency_hz, "window_s": window_s(settings),
                     "warmup_s": warmup_s(settings), "long_window_s": long_window_s(settings),
                     "interval_s": settings.run_interval_s},
        "commands": {"workload": f"{shlex.join([str(exe), str(window_s(settings))])} x nproc",
                     "profilers": {w: command_line(profiler_cmd(w, settings, Path("TMP"))) for w in PROFILERS[1:]},
                     "churn": "sh -c 'while :; do /bin/true; done'",
                     "cpu": "/proc/PID/stat utime+stime+cutime+cstime (plus live descendants) over the window",
                     "memory": "VmRSS every 1 s (median), VmHWM; smaps_rollup Pss, Private_* (USS); "
                               "fdinfo memlock of bpf-map fds"},
        "reps": reps, "medians": med, "vs_peers": vs, "idle": idle, "churn": churn,
        "targets": {
            "throughput": target(f"hostflame workload throughput ratio >= {TARGET_RATIO} (median)", hf,
                                 hf >= TARGET_RATIO),
            "vs_peers": target("hostflame no worse than either peer (median of the per-rep differences of "
                               "throughput ratio to bcc and to perf >= 0)", worst, worst >= 0),
        },
    }
    result["json"] = str(write_result(settings, NAME, result))
    say(render(result))
    return result


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    table = Table(f"footprint: {s['window_s']:g} s of the throughput workload on every CPU at {s['frequency_hz']} Hz "
                  f"(after {s.get('warmup_s', 0):g} s of warm-up), "
                  f"{s['reps']} reps (medians)",
                  ["profiler", "ops/s", "ratio", "ops/CPU-s ratio", "CPU s in window", "start-up CPU s", "CPU s in all",
                   "RSS steady MB",
                   "RSS peak MB", "PSS MB", "USS MB", "BPF maps MB", "host busy %"])
    for which, m in result["medians"].items():
        nan = float("nan")
        mb = [m.get(k, nan) / 1024 for k in ("rss_steady_kb", "rss_peak_kb", "pss_steady_kb", "uss_steady_kb")]
        cpu = [m.get(k, nan) for k in ("profiler_cpu_s", "startup_cpu_s", "total_cpu_s")]
        table.add(which, m["ops_per_s"], m["throughput_ratio"], m["per_cpu_ratio"], *cpu, *mb,
                  m.get("bpf_map_bytes", nan) / 2**20, m["host_busy_percent"])
    idle, churn = result["idle"], result["churn"]
    lines = [table.render()]
    for peer, v in result["vs_peers"].items():
        lines.append(f"hostflame - {peer}, throughput ratio rep by rep: median {v['median_difference']:+.4f}, "
                     f"no worse in {v['no_worse_reps']} of {v['reps']} reps, sign test p = {v['sign_test_p']:.2f}")
    lines += [
             f"idle host ({s['long_window_s']:g} s): hostflame {idle['cpu_s_per_minute']:.3f} CPU s per minute "
             f"({idle['cpu_percent_of_one_cpu']:.2f} % of one CPU), RSS {idle['rss_kb'] / 1024:.1f} MB, "
             f"PSS {idle['pss_kb'] / 1024:.1f} MB, USS {idle['uss_kb'] / 1024:.1f} MB; host busy "
             f"{idle['host_busy_percent']:.0f} %",
             f"exec churn ({churn['forks_per_s']:.0f} forks/s): hostflame {churn['cpu_percent_of_one_cpu']:.2f} % "
             f"of one CPU, RSS {churn['rss_kb'] / 1024:.1f} MB; comm 'true': {churn['true_samples']} samples, "
             f"{churn['true_frames_named_percent']:.1f} % of frames named, {churn['true_leaf_named_percent']:.1f} % "
             f"of leaves named"]
    for t in result["targets"].values():
        lines.append(f"target {t['target']}: {'MET' if t['met'] else 'MISSED'} ({t['value']:.4f})")
    return "\n".join(lines) + "\n"
