"""Benchmark 4, delivery: what continuous export costs, and how it rides out a backend outage.

Part 1, build_queue (in-process, no BPF): one 15 s interval at 99 Hz on 2 CPUs (2970 samples,
depth 30) spread over 50 processes (50 targets) goes through ``Pipeline.handle``: split into
targets, relabel (3 rules), pprof per target, gzip, PushRequest, queue (the sender thread posts
to a fake server on 127.0.0.1 meanwhile). Two stack shapes: ``tree`` (call-tree stacks, see
``tree_profile``; the target is judged on it) and ``random`` (every frame drawn at random: the
worst case, reported). Measured: CPU time of the calling thread (``time.thread_time``), so the
sender's HTTP work is not counted; reps 20, median. Also with Pyroscope and OTLP at once.
Target: <= 50 ms with Pyroscope. The pprof builder keeps what it needs of each symbol across
intervals (in the daemon the symbolizer hands out the same objects interval after interval),
so the first rep runs with cold caches: it is reported as well (``first ms``).

Part 2, outage (real BPF, root): ``hostflame run --interval 15 --pyroscope-url FAKE
--metrics-addr`` with every CPU busy; the fake Pyroscope answers 200 for 60 s, 503 for 300 s
(BENCH_QUICK: 60 s), then 200 again for 45 s. Measured: VmRSS every 2 s; steady = median over
the healthy first phase after start-up; peak during and after the outage; the agent's own
``hostflame_queue_bytes`` and drop counters from /metrics; recovery = first 200 answer after the
server recovered. Targets: peak - steady <= queue cap + 30 MB; recovery <= 2 intervals.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.config import RemoteConfig
from agent.exporters.otlp import OtlpExporter
from agent.exporters.pyroscope import PyroscopeExporter
from agent.exporters.remote import RemoteExporter
from agent.labels import Targeter
from agent.model import Frame, FrameKind, Module, ProcessInfo, Profile, ProfileSample, Symbolized
from agent.pipeline import Pipeline
from agent.relabel import parse_rule
from tests.benchmarks.common import HOSTFLAME, Settings, artifacts_dir, busy_workload, machine, status_kb
from tests.benchmarks.output import Table, progress, say, target, write_result
from tests.benchmarks.run_overhead import Agent
from tests.fake_backend import fake_server, free_port

NAME = "delivery"
TARGET_BUILD_MS = 50.0
TARGET_EXTRA_MB = 30.0
DEFAULT_QUEUE_BYTES = 64 * 2**20
BUILD_REPS = 20


def tree_profile(n_targets: int = 50, samples: int = 2970, depth: int = 30, seed: int = 7) -> Profile:
    """``samples`` samples (identical stacks of a process merged) of ``n_targets`` processes whose stacks
    follow a call tree, as real programs' do: every 5th level is a dispatch point with 3
    callees (weights 6:3:1), the levels between call one function, and a frame's location
    depends on its level and the last two dispatch choices (a call site is the same whatever
    called its function); 30 % of the samples are in a syscall (one of 5 kernel paths of 4 frames)."""
    rng = random.Random(seed)
    kernel_mod = Module(path="[kernel.kallsyms]", build_id=b"", start=0xFFFFFFFF81000000, end=0xFFFFFFFF83000000,
                        file_offset=0)
    kernel_paths = [tuple(Symbolized(kernel_mod.start + 64 * (10 * p + i), FrameKind.KERNEL, kernel_mod,
                                     (Frame(f"kfunc_{p}_{i}"),), True) for i in range(4)) for p in range(5)]
    out = []
    for t in range(n_targets):
        exe = Module(path=f"/opt/svc{t}/bin/server", build_id=bytes([t]) * 20, start=0x400000, end=0x800000,
                     file_offset=0)
        info = ProcessInfo(pid=1000 + t, incarnation=t, start_time_ticks=1, comm=f"svc{t}", exe=exe.path,
                           cmdline=(exe.path, "--port", "80"), cgroup="/", container_id="", mappings=(exe,))
        counts: dict[tuple[Symbolized, ...], int] = {}  # identical stacks merged, as the collector does
        nodes: dict[tuple[int, ...], Symbolized] = {}  # a location: (level, the last two dispatch choices)
        for _ in range(samples // n_targets + (1 if t < samples % n_targets else 0)):
            path: tuple[int, ...] = ()
            stack = []
            for level in range(depth - 4):
                path += (rng.choices((0, 1, 2), (6, 3, 1))[0] if level % 5 == 4 else 0,)
                key = (level, *[c for i, c in enumerate(path) if i % 5 == 4][-2:])
                node = nodes.get(key)
                if node is None:
                    node = nodes[key] = Symbolized(exe.start + 16 * len(nodes), FrameKind.NATIVE, exe,
                                                    (Frame(f"svc{t}_f{len(nodes)}", file="/src/a.c", line=level),),
                                                    True)
                stack.append(node)
            stack.reverse()  # leaf first
            if rng.random() < 0.3:
                stack = [*rng.choice(kernel_paths), *stack]
            counts[tuple(stack)] = counts.get(tuple(stack), 0) + 1
        out.extend(ProfileSample(stack=stack, count=n, labels=(("comm", info.comm), ("exe", info.exe)),
                                 num_labels=(("pid", info.pid),), process=info) for stack, n in counts.items())
    return Profile(samples=tuple(out), frequency_hz=99, start_ns=time.time_ns(), duration_ns=15 * 10**9, host="bench")


def interval_profile(n_targets: int = 50, samples: int = 2970, depth: int = 30, seed: int = 7) -> Profile:
    """Worst case: ``samples`` stacks of ``n_targets`` processes, every frame drawn at random
    (3 of 300 kernel, 2 of 200 libc, 25 of 400 of the process's own): nearly every frame of
    the interval is a distinct location."""
    rng = random.Random(seed)
    kernel_mod = Module(path="[kernel.kallsyms]", build_id=b"", start=0xFFFFFFFF81000000, end=0xFFFFFFFF83000000,
                        file_offset=0)
    kernel = [Symbolized(kernel_mod.start + 64 * i, FrameKind.KERNEL, kernel_mod, (Frame(f"kfunc_{i}"),), True)
              for i in range(300)]
    libc = Module(path="/usr/lib/x86_64-linux-gnu/libc.so.6", build_id=b"\x01" * 20, start=0x7F0000000000,
                  end=0x7F0000200000, file_offset=0)
    libc_syms = [Symbolized(libc.start + 32 * i, FrameKind.NATIVE, libc, (Frame(f"libc_{i}"),), True)
                 for i in range(200)]
    procs = []
    for t in range(n_targets):
        exe = Module(path=f"/opt/svc{t}/bin/server", build_id=bytes([t]) * 20, start=0x400000, end=0x800000,
                     file_offset=0)
        info = ProcessInfo(pid=1000 + t, incarnation=t, start_time_ticks=1, comm=f"svc{t}", exe=exe.path,
                           cmdline=(exe.path, "--port", "80"), cgroup="/", container_id="", mappings=(exe, libc))
        syms = [Symbolized(exe.start + 16 * i, FrameKind.NATIVE, exe, (Frame(f"svc{t}_func_{i}", file="/src/a.c",
                                                                             line=i),), True)
                for i in range(400)]
        procs.append((info, syms))
    out = []
    for i in range(samples):
        info, syms = procs[i % n_targets]
        stack = (*rng.choices(kernel, k=3), *rng.choices(libc_syms, k=2), *rng.choices(syms, k=depth - 5))
        out.append(ProfileSample(stack=tuple(stack), count=1, labels=(("comm", info.comm), ("exe", info.exe)),
                                 num_labels=(("pid", info.pid),), process=info))
    return Profile(samples=tuple(out), frequency_hz=99, start_ns=time.time_ns(), duration_ns=15 * 10**9, host="bench")


RULES = tuple(parse_rule(r, f"relabel[{i}]") for i, r in enumerate([
    {"action": "drop", "source_labels": ["__meta_process_comm"], "regex": "kworker.*"},
    {"source_labels": ["__meta_process_cmdline"], "regex": ".*--port (\\d+).*", "target_label": "port"},
    {"action": "labelmap", "regex": "__meta_process_(comm)", "replacement": "process_$1"},
]))


def measure_build(with_otlp: bool, shape: str) -> dict[str, Any]:
    profile = tree_profile() if shape == "tree" else interval_profile()
    locations = len({id(sym) for s in profile.samples for sym in s.stack})
    with fake_server() as server:
        remote = RemoteConfig(url=server.url)
        remotes: list[RemoteExporter] = [PyroscopeExporter(remote)]
        if with_otlp:
            remotes.append(OtlpExporter(remote))
        pipeline = Pipeline(Targeter((("env", "bench"),), RULES), None, remotes)
        times_ms = []
        targets = 0
        for _ in range(BUILD_REPS):
            started = time.thread_time()
            targets = pipeline.handle(profile)
            times_ms.append((time.thread_time() - started) * 1000)
        final = pipeline.close(30)
    bytes_sent = sum(len(r.body) for r in server.requests)
    return {"shape": shape, "targets": targets, "samples": profile.total_samples, "locations": locations,
            "cpu_ms": times_ms,
            "median_ms": statistics.median(times_ms), "max_ms": max(times_ms), "first_ms": times_ms[0],
            "requests": len(server.requests), "request_bytes_per_interval": bytes_sent // BUILD_REPS,
            "sent": {k: v.sent for k, v in final.items()}, "produced": {k: v.produced for k, v in final.items()}}


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure_outage(settings: Settings, artifacts: Path) -> dict[str, Any]:
    healthy_s, outage_s, after_s = 60.0, (60.0 if settings.quick else 300.0), 45.0
    interval = settings.run_interval_s
    port = free_port()
    marks: dict[str, float] = {}

    def script(_n: int, t: float) -> tuple[int, dict[str, str]]:
        down = "down" in marks and "up" not in marks
        return (503, {}) if down else (200, {})

    rss: list[tuple[float, int]] = []
    scrapes: list[tuple[float, str]] = []
    with busy_workload(settings, splits=len(os.sched_getaffinity(0))), fake_server(script) as server:
        cmd = [str(HOSTFLAME), "run", "--interval", f"{interval:g}", "--frequency", str(settings.frequency_hz),
               "--pyroscope-url", server.url, "--metrics-addr", f"127.0.0.1:{port}"]
        agent = Agent(cmd)
        assert agent.ready.wait(120), agent.log()
        t0 = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss.append((time.monotonic() - t0, status_kb(agent.proc.pid, "VmRSS")))
                try:
                    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                    scrapes.append((time.monotonic() - t0, text))
                except OSError:
                    pass
                stop.wait(2.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        progress(f"outage: healthy {healthy_s:g} s, backend down {outage_s:g} s, then up {after_s:g} s")
        time.sleep(healthy_s)
        marks["down"] = time.monotonic() - t0
        time.sleep(outage_s)
        marks["up"] = time.monotonic() - t0
        time.sleep(after_s)
        stop.set()
        sampler.join()
        code, stop_s = agent.stop()
        (artifacts / "outage.log").write_text(agent.log())
    up_at = marks["up"] + t0
    first_ok_after = min((r.at for r in server.ok() if r.at >= up_at), default=float("nan"))
    steady = [kb for t, kb in rss if interval <= t < marks["down"]]  # after the first interval's warm-up
    during = [kb for t, kb in rss if t >= marks["down"]]
    last = scrapes[-1][1] if scrapes else ""
    queue_peak = max((_metric(text, "hostflame_queue_bytes") for _, text in scrapes), default=0.0)
    steady_kb = statistics.median(steady) if steady else float("nan")
    peak_kb = max(during) if during else float("nan")
    return {
        "healthy_s": healthy_s, "outage_s": outage_s, "after_s": after_s, "interval_s": interval,
        "rss_steady_mb": steady_kb / 1024, "rss_peak_mb": peak_kb / 1024, "rss_growth_mb": (peak_kb - steady_kb) / 1024,
        "queue_peak_mb": queue_peak / 2**20, "queue_cap_mb": DEFAULT_QUEUE_BYTES / 2**20,
        "recovery_s": first_ok_after - up_at,
        "produced": _metric(last, "hostflame_profiles_produced_total"),
        "sent": _metric(last, "hostflame_profiles_sent_total"),
        "dropped": _metric(last, 'hostflame_profiles_dropped_total{cause="queue_full"') + _metric(
            last, 'hostflame_profiles_dropped_total{cause="expired"'),
        "retries": _metric(last, "hostflame_retries_total"),
        "requests_503": sum(1 for r in server.requests if r.status == 503),
        "requests_ok": len(server.ok()), "exit_code": code, "stop_s": stop_s,
        "rss_series": rss,
    }


def run(settings: Settings) -> dict[str, Any]:
    artifacts = artifacts_dir(settings, NAME)
    progress("build_queue: 50 targets, call-tree stacks, Pyroscope / Pyroscope + OTLP")
    build = measure_build(with_otlp=False, shape="tree")
    build_both = measure_build(with_otlp=True, shape="tree")
    progress("build_queue: 50 targets, every frame random (worst case), Pyroscope")
    build_worst = measure_build(with_otlp=False, shape="random")
    outage = measure_outage(settings, artifacts)
    cap_mb = outage["queue_cap_mb"]
    result = {
        "name": NAME, "machine": machine(),
        "settings": {"frequency_hz": settings.frequency_hz, "interval_s": settings.run_interval_s,
                     "build_reps": BUILD_REPS},
        "build_queue": {"pyroscope": build, "pyroscope_otlp": build_both, "pyroscope_worst_case": build_worst},
        "outage": outage,
        "medians": {"build_ms": build["median_ms"], "build_both_ms": build_both["median_ms"],
                    "build_worst_ms": build_worst["median_ms"],
                    "rss_growth_mb": outage["rss_growth_mb"], "recovery_s": outage["recovery_s"]},
        "targets": {
            "build": target(f"build+queue one 15 s interval, 50 targets <= {TARGET_BUILD_MS:g} ms CPU (median)",
                            build["median_ms"], build["median_ms"] <= TARGET_BUILD_MS),
            "memory": target(f"RSS growth in a {outage['outage_s']:g} s outage <= queue cap ({cap_mb:g} MB) + "
                             f"{TARGET_EXTRA_MB:g} MB", outage["rss_growth_mb"],
                             outage["rss_growth_mb"] <= cap_mb + TARGET_EXTRA_MB),
            "recovery": target(f"delivery resumes <= 2 intervals ({2 * settings.run_interval_s:g} s) after recovery",
                               outage["recovery_s"], outage["recovery_s"] <= 2 * settings.run_interval_s),
        },
    }
    result["json"] = str(write_result(settings, NAME, result))
    say(render(result))
    return result


def render(result: dict[str, Any]) -> str:
    b = result["build_queue"]
    table = Table("delivery/build_queue: one 15 s interval at 99 Hz x 2 CPUs, 50 targets, thread CPU per interval",
                  ["exporters", "stacks", "targets", "samples", "locations", "median ms", "max ms",
                   "first ms", "request bytes/interval"])
    for name, r in b.items():
        table.add(name, r["shape"], r["targets"], r["samples"], r["locations"], r["median_ms"], r["max_ms"],
                  r["first_ms"], r["request_bytes_per_interval"])
    o = result["outage"]
    table2 = Table(f"delivery/outage: backend 503 for {o['outage_s']:g} s at {result['settings']['frequency_hz']} Hz",
                   ["RSS steady MB", "RSS peak MB", "growth MB", "queue peak MB", "recovery s", "produced", "sent",
                    "dropped", "retries", "exit"])
    table2.add(o["rss_steady_mb"], o["rss_peak_mb"], o["rss_growth_mb"], o["queue_peak_mb"], o["recovery_s"],
               o["produced"], o["sent"], o["dropped"], o["retries"], o["exit_code"])
    lines = [table.render(), table2.render()]
    for t in result["targets"].values():
        lines.append(f"target {t['target']}: {'MET' if t['met'] else 'MISSED'} ({t['value']:.2f})")
    return "\n".join(lines) + "\n"
