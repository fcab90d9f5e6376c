"""Benchmark 1, attribution: with every CPU busy, how many of the samples the kernel should
have taken end up in the profile?

Workload: two ``split`` CPU burners (one per CPU on the 2-CPU reference machine).
Measured per rep: ``hostflame record --duration D -o x.pb.gz``; the sum of sample values as
Google pprof reads them, as a share of FREQUENCY x CPUs x D (the nominal count) and of
FREQUENCY x CPUs x the profile's own Duration; the BPF counters from the profile's comments
(``taken``, ``idle``, ``lost_counts_map_full``, stack-map losses); the host's busy share over
the window (/proc/stat) so an idle CPU is visible. Target: median attributed >= 99 % nominal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    pprof_comments,
    pprof_duration_s,
    pprof_samples,
    ratio,
    run_measured,
)
from tests.benchmarks.output import Table, progress, say, target, write_result

NAME = "attribution"
TARGET_PERCENT = 99.0
COUNTERS = ("taken", "counted", "idle", "lost_counts_map_full", "kernel_stack_collision", "user_stack_collision",
            "kernel_stack_map_full", "user_stack_map_full", "user_stack_missing", "process_events_lost")


def run(settings: Settings) -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0))
    nominal = settings.frequency_hz * cpus * settings.record_duration_s
    reps: list[dict[str, Any]] = []
    tmp = artifacts_dir(settings, NAME)
    with busy_workload(settings, splits=cpus) as workload:
        for rep in range(settings.reps):
            profile = tmp / f"rep{rep + 1}.pb.gz"
            cmd = hostflame_record_cmd(settings, profile)
            progress(f"{NAME} rep {rep + 1}/{settings.reps}: {command_line(cmd)}")
            before = host_cpu_ticks()
            measured = run_measured_checked(cmd)
            after = host_cpu_ticks()
            workload.check_alive()
            (tmp / f"rep{rep + 1}.log").write_text(measured.stderr)
            samples = pprof_samples(profile)
            attributed = sum(count for _, count, _ in samples)
            comments = pprof_comments(profile)
            duration = pprof_duration_s(profile)
            reps.append({
                "attributed_samples": attributed,
                "attributed_percent_of_nominal": 100.0 * ratio(attributed, nominal),
                "profile_duration_s": duration,
                "attributed_percent_of_profile_duration": 100.0 * ratio(
                    attributed, settings.frequency_hz * cpus * duration),
                "counters": {k: int(comments[k]) for k in COUNTERS if k in comments},
                "host_busy_percent": busy_percent(before, after),
                "hostflame_wall_s": measured.wall_s,
                "hostflame_cpu_s": measured.cpu_s,
            })
    med = {
        "attributed_samples": median([r["attributed_samples"] for r in reps]),
        "attributed_percent_of_nominal": median([r["attributed_percent_of_nominal"] for r in reps]),
        "attributed_percent_of_profile_duration": median(
            [r["attributed_percent_of_profile_duration"] for r in reps]),
        "taken": median([r["counters"].get("taken", float("nan")) for r in reps]),
        "idle": median([r["counters"].get("idle", float("nan")) for r in reps]),
        "lost_counts_map_full": median([r["counters"].get("lost_counts_map_full", float("nan")) for r in reps]),
        "host_busy_percent": median([r["host_busy_percent"] for r in reps]),
    }
    result = {
        "name": NAME,
        "machine": machine(),
        "settings": {"reps": settings.reps, "frequency_hz": settings.frequency_hz, "cpus": cpus,
                     "duration_s": settings.record_duration_s, "nominal_samples": nominal},
        "commands": {"workload": workload.commands,
                     "profiler": command_line(hostflame_record_cmd(settings, Path("x.pb.gz"))),
                     "read": "pprof -traces -sample_index=samples -symbolize=none x.pb.gz; "
                             "pprof -comments -symbolize=none x.pb.gz"},
        "reps": reps,
        "medians": med,
        "targets": {"attributed_percent_of_nominal": target(
            f">= {TARGET_PERCENT:g} % of {settings.frequency_hz} Hz x {cpus} CPUs x {settings.record_duration_s:g} s",
            med["attributed_percent_of_nominal"], med["attributed_percent_of_nominal"] >= TARGET_PERCENT)},
    }
    result["json"] = str(write_result(settings, NAME, result))
    say(render(result))
    return result


def run_measured_checked(cmd: list[str]) -> Measured:
    measured = run_measured(cmd, marker="sampling")
    if measured.returncode != 0:
        raise RuntimeError(f"{command_line(cmd)} exited {measured.returncode}: {measured.stderr[-2000:]}")
    return measured


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    table = Table(
        f"attribution: {s['frequency_hz']} Hz x {s['cpus']} CPUs x {s['duration_s']:g} s = "
        f"{s['nominal_samples']:g} nominal samples, {s['reps']} reps",
        ["rep", "attributed", "% nominal", "% of Hz x CPUs x dur", "taken", "idle", "lost(map full)", "host busy %"],
    )
    for i, r in enumerate(result["reps"], 1):
        c = r["counters"]
        table.add(str(i), r["attributed_samples"], r["attributed_percent_of_nominal"],
                  r["attributed_percent_of_profile_duration"], c.get("taken"), c.get("idle"),
                  c.get("lost_counts_map_full"), r["host_busy_percent"])
    m = result["medians"]
    table.add("median", m["attributed_samples"], m["attributed_percent_of_nominal"],
              m["attributed_percent_of_profile_duration"], m["taken"], m["idle"], m["lost_counts_map_full"],
              m["host_busy_percent"])
    t = result["targets"]["attributed_percent_of_nominal"]
    verdict = "MET" if t["met"] else "MISSED"
    return f"{table.render()}\ntarget {t['target']}: {verdict} ({t['value']:.2f} %)\n"
