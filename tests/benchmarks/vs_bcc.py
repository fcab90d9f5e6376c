"""Benchmark 2, vs_bcc: hostflame against bcc's own profiler on the same workload.

Workload (the same for both, running throughout): two ``split`` CPU burners plus
``sh -c 'while :; do /bin/true; done'`` (short-lived processes, ld.so and libc frames).
Alternating per rep (ABBA: the order flips every rep so drift hits both alike):
``hostflame record --duration D -o x.pb.gz`` (twice: ``hostflame`` loads the program compiled
by an earlier start, ``hostflame_cold`` has that record deleted first and compiles, as on its
first start on a host) and ``profile-bpfcc -F HZ -f D > out.folded`` (which compiles every
time), each against the same kernel-header tree (bcc gets it as BCC_KERNEL_SOURCE).

Measured per run: CPU seconds of the profiler process (user+sys from os.wait4's rusage, which
includes bcc's in-process compile and any children it waited for), wall time, peak RSS, and
the share of frames it names, sample-weighted over every frame of every stack: for hostflame
the frames of ``pprof -traces -symbolize=none``, for bcc those of its folded lines (the comm,
first on each line, is not a frame). Unnamed: ``module+0xOFFSET`` style addresses and
placeholders (``[unknown]``, ``[jit]``, ``[missing ...``, ``[user stack lost ...``,
``[kernel stack lost ...``, ``[anon]``, ``[broken frame chain]`` (one frame where hostflame cut a
frame-pointer walk that left the code: bcc prints each frame the walk found, mostly
``[unknown]``); bcc: ``[unknown]``, ``[Missed User Stack]``,
``[Missed Kernel Stack]``). Each profiler is judged on its own sample set; shares are also
given for the workload's own processes only (comm split/sh/true), which the rest of a noisy
host does not dilute, and as named frames per sample (a profiler that unwinds deeper but
cannot name the extra frames loses share, not named frames per sample). bcc prints the
sampled kernel IP once more above the kernel stack (``pte_val;pte_val``); those frames are
counted as printed, and the samples whose leaf repeats are counted (``leaf_repeats``).
Targets: hostflame CPU <= bcc CPU (warm and cold) and hostflame named share >= bcc's (medians).
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.host import default_cache_dir, find_kernel_headers
from tests.benchmarks.common import (
    Measured,
    Settings,
    artifacts_dir,
    busy_percent,
    busy_workload,
    command_line,
    host_cpu_ticks,
    hostflame_record_cmd,
    machine,
    median,
    pprof_samples,
    ratio,
    run_measured,
)
from tests.benchmarks.output import Table, progress, say, target, write_result

NAME = "vs_bcc"
HOSTFLAME_UNNAMED_PREFIXES = ("[unknown]", "[jit]", "[missing", "[user stack lost", "[kernel stack lost", "[anon]",
                              "[broken frame chain]",
                              "[kernel] 0x")
BCC_UNNAMED_PREFIXES = ("[unknown]", "[Missed User Stack]", "[Missed Kernel Stack]", "[Missed")
PROFILERS = ("hostflame_cold", "hostflame", "bcc")  # warm always follows a start that compiled or bcc
_BRACKET_ADDR = re.compile(r"^\[[^\]]*\] 0x[0-9a-f]+$")


@dataclass
class FrameShare:
    """Sample-weighted frame counts of one profile (all processes, and the workload's only)."""

    samples: int = 0
    frames: int = 0
    named: int = 0
    empty_stacks: int = 0
    workload_samples: int = 0
    workload_frames: int = 0
    workload_named: int = 0
    leaf_repeats: int = 0
    unnamed_by_kind: Counter[str] = field(default_factory=Counter)

    def add(self, comm: str, frames: list[str], count: int, unnamed_prefixes: tuple[str, ...],
            in_workload: bool) -> None:
        named = sum(1 for f in frames if not is_unnamed(f, unnamed_prefixes))
        for frame in frames:
            if is_unnamed(frame, unnamed_prefixes):
                self.unnamed_by_kind[f"{comm}: {unnamed_kind(frame)}"] += count
        self.samples += count
        self.frames += count * len(frames)
        self.named += count * named
        self.empty_stacks += count if not frames else 0
        self.leaf_repeats += count if len(frames) > 1 and frames[0] == frames[1] else 0
        if in_workload:
            self.workload_samples += count
            self.workload_frames += count * len(frames)
            self.workload_named += count * named

    def as_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.__dict__.items() if k != "unnamed_by_kind"}
        return {**fields, "unnamed_top": dict(self.unnamed_by_kind.most_common(12)),
                "named_percent": 100.0 * ratio(self.named, self.frames),
                "workload_named_percent": 100.0 * ratio(self.workload_named, self.workload_frames),
                "named_per_sample": ratio(self.named, self.samples),
                "workload_named_per_sample": ratio(self.workload_named, self.workload_samples),
                "mean_depth": ratio(self.frames, self.samples)}


def unnamed_kind(frame: str) -> str:
    """What an unnamed frame is, without its address: ``libc.so.6``, ``[unknown]``, ``[jit]``."""
    if "+0x" in frame:
        return frame.split("+0x", 1)[0] + "+0x..."
    return frame.split(":", 1)[0].split(" 0x", 1)[0]


def is_unnamed(frame: str, prefixes: tuple[str, ...]) -> bool:
    """An address or a placeholder, not a name (``[anything] 0xADDR`` included)."""
    return "+0x" in frame or frame.startswith(prefixes) or not frame.strip() or bool(_BRACKET_ADDR.match(frame))


def hostflame_shares(profile: Path, comms: frozenset[str]) -> FrameShare:
    share = FrameShare()
    for frames, count, labels in pprof_samples(profile):
        comm = dict(labels).get("comm", "")
        share.add(comm, list(frames), count, HOSTFLAME_UNNAMED_PREFIXES, comm in comms)
    return share


def bcc_shares(folded: Path, comms: frozenset[str]) -> FrameShare:
    share = FrameShare()
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        comm, *frames = stack.split(";")
        frames.reverse()  # folded lines are root first; pprof's traces leaf first
        share.add(comm, frames, int(count), BCC_UNNAMED_PREFIXES, comm in comms)
    return share


def bcc_env() -> dict[str, str]:
    env = dict(os.environ)
    headers = find_kernel_headers()
    if headers.source_dir is not None:
        env["BCC_KERNEL_SOURCE"] = str(headers.source_dir)
    return env


def bcc_cmd(settings: Settings) -> list[str]:
    exe = shutil.which("profile-bpfcc") or "/usr/sbin/profile-bpfcc"
    return [exe, "-F", str(settings.frequency_hz), "-f", f"{settings.record_duration_s:g}"]


def forget_compiled_program() -> None:
    """Make the next hostflame start compile, as its first start on a host does."""
    shutil.rmtree(default_cache_dir() / "bpf", ignore_errors=True)


def run_one(which: str, settings: Settings, tmp: Path, rep: int, comms: frozenset[str]) -> dict[str, Any]:
    if which == "hostflame_cold":
        forget_compiled_program()
    before = host_cpu_ticks()
    if which.startswith("hostflame"):
        profile = tmp / f"{which}-rep{rep + 1}.pb.gz"
        cmd = hostflame_record_cmd(settings, profile, top=None)
        progress(f"{NAME} rep {rep + 1}/{settings.reps} ({which}): {command_line(cmd)}")
        measured = run_measured(cmd, stdout=tmp / f"{which}-rep{rep + 1}.top", marker="sampling")
        check(measured, cmd)
        shares = hostflame_shares(profile, comms)
    else:
        folded = tmp / f"bcc-rep{rep + 1}.folded"
        cmd = bcc_cmd(settings)
        progress(f"{NAME} rep {rep + 1}/{settings.reps}: {command_line(cmd, folded)}")
        measured = run_measured(cmd, stdout=folded, env=bcc_env(), attach_fds=len(os.sched_getaffinity(0)))
        check(measured, cmd)
        shares = bcc_shares(folded, comms)
    after = host_cpu_ticks()
    (tmp / f"{which}-rep{rep + 1}.log").write_text(measured.stderr)
    return {
        "cpu_s": measured.cpu_s, "user_s": measured.user_s, "sys_s": measured.sys_s, "wall_s": measured.wall_s,
        "maxrss_kb": measured.maxrss_kb,
        "startup_wall_s": nan_if_none(measured.marker_wall_s), "startup_cpu_s": nan_if_none(measured.marker_cpu_s),
        "after_startup_cpu_s": measured.cpu_s - nan_if_none(measured.marker_cpu_s),
        "host_busy_percent": busy_percent(before, after),
        "stderr_tail": measured.stderr.strip().splitlines()[-3:],
        **shares.as_dict(),
    }


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def check(measured: Measured, cmd: list[str]) -> None:
    if measured.returncode != 0:
        raise RuntimeError(f"{command_line(cmd)} exited {measured.returncode}: {measured.stderr[-2000:]}")


METRICS = ("cpu_s", "startup_cpu_s", "after_startup_cpu_s", "startup_wall_s", "wall_s", "maxrss_kb", "samples",
           "named_percent", "workload_named_percent", "named_per_sample", "workload_named_per_sample", "mean_depth",
           "leaf_repeats")


def run(settings: Settings) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PROFILERS}
    order: list[str] = []
    tmp = artifacts_dir(settings, NAME)
    with busy_workload(settings, splits=len(os.sched_getaffinity(0)), shell_loop=True) as workload:
        for rep in range(settings.reps):
            for which in PROFILERS if rep % 2 == 0 else PROFILERS[::-1]:
                order.append(which)
                runs[which].append(run_one(which, settings, tmp, rep, workload.comms))
                workload.check_alive()
    medians = {p: {m: median([r[m] for r in runs[p]]) for m in METRICS} for p in PROFILERS}
    ratios = {m: ratio(medians["hostflame"][m], medians["bcc"][m]) for m in METRICS}
    cold_ratios = {m: ratio(medians["hostflame_cold"][m], medians["bcc"][m]) for m in METRICS}
    hf, cold, bcc = medians["hostflame"], medians["hostflame_cold"], medians["bcc"]
    result = {
        "name": NAME,
        "machine": machine(),
        "settings": {"reps": settings.reps, "frequency_hz": settings.frequency_hz,
                     "duration_s": settings.record_duration_s, "order": order},
        "commands": {
            "workload": workload.commands,
            "hostflame": command_line(hostflame_record_cmd(settings, Path("x.pb.gz"), top=None)),
            "hostflame_cold": f"rm -r {default_cache_dir() / 'bpf'}; the same (it compiles, as on its first start)",
            "bcc": "BCC_KERNEL_SOURCE=<hostflame's header tree> " + command_line(bcc_cmd(settings), Path("out.folded")),
            "hostflame_frames": "pprof -traces -sample_index=samples -symbolize=none x.pb.gz",
            "cpu": "os.wait4 rusage of the profiler process (ru_utime + ru_stime, children included)",
        },
        "reps": runs,
        "medians": medians,
        "ratios_hostflame_over_bcc": ratios,
        "ratios_hostflame_cold_over_bcc": cold_ratios,
        "targets": {
            "cpu": target("hostflame CPU s <= bcc CPU s (median)", ratios["cpu_s"], hf["cpu_s"] <= bcc["cpu_s"]),
            "cpu_cold": target("hostflame CPU s, compiling as on its first start, <= bcc CPU s (median)",
                               cold_ratios["cpu_s"], cold["cpu_s"] <= bcc["cpu_s"]),
            "named": target("hostflame named-frame share >= bcc's (median, all processes)",
                            ratios["named_percent"], hf["named_percent"] >= bcc["named_percent"]),
            "named_workload": target("hostflame named-frame share >= bcc's (median, workload processes)",
                                     ratios["workload_named_percent"],
                                     hf["workload_named_percent"] >= bcc["workload_named_percent"]),
        },
    }
    result["json"] = str(write_result(settings, NAME, result))
    say(render(result))
    return result


COLUMNS = (("CPU s", "cpu_s"), ("start-up CPU s", "startup_cpu_s"), ("after CPU s", "after_startup_cpu_s"),
           ("start-up s", "startup_wall_s"), ("wall s", "wall_s"), ("peak RSS MB", "maxrss_kb"),
           ("samples", "samples"), ("named % all", "named_percent"), ("named % wkld", "workload_named_percent"),
           ("named/sample", "named_per_sample"), ("named/sample wkld", "workload_named_per_sample"),
           ("depth", "mean_depth"))


def _cells(values: dict[str, Any], scale_rss: bool = True) -> list[Any]:
    return [values[key] / 1024 if key == "maxrss_kb" and scale_rss else values[key] for _, key in COLUMNS]


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    table = Table(f"vs_bcc: {s['frequency_hz']} Hz for {s['duration_s']:g} s, {s['reps']} reps each, "
                  f"alternating ({' '.join(s['order'])})", ["run", *(title for title, _ in COLUMNS)])
    for p in PROFILERS:
        for i, r in enumerate(result["reps"][p], 1):
            table.add(f"{p} #{i}", *_cells(r))
    for p in PROFILERS:
        table.add(f"{p} median", *_cells(result["medians"][p]))
    table.add("hostflame/bcc", *_cells(result["ratios_hostflame_over_bcc"], scale_rss=False))
    table.add("hostflame_cold/bcc", *_cells(result["ratios_hostflame_cold_over_bcc"], scale_rss=False))
    lines = [table.render(), "start-up ends: hostflame at its 'sampling' log line; bcc when it holds one perf-event "
             "fd per CPU (it logs nothing); 'after' = the rest: sampling, symbolizing, writing; wkld = the "
             "workload's processes only",
             "samples whose leaf frame repeats (bcc prints the kernel IP above the kernel stack), median: "
             + ", ".join(f"{p} {result['medians'][p]['leaf_repeats']:g}" for p in PROFILERS)]
    for p in PROFILERS:
        last = result["reps"][p][-1]["unnamed_top"]
        lines.append(f"{p} unnamed frames, last rep, sample-weighted (comm: kind): "
                     + ", ".join(f"{k} {v}" for k, v in list(last.items())[:6]))
    for t in result["targets"].values():
        lines.append(f"target {t['target']}: {'MET' if t['met'] else 'MISSED'} (ratio {t['value']:.3f})")
    return "\n".join(lines) + "\n"
