"""``make bench``: run every benchmark (or those named in BENCH_ONLY), print each table and a
summary of the targets, and write out/bench/<name>.json plus out/bench/summary.json.

Exit status: 0 when every benchmark ran (a missed target is reported, not an error; set
BENCH_STRICT=1 to exit 1 on a missed target too), 1 when one could not run, 2 on a bad knob.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from tests.benchmarks import attribution, bpf_cost, delivery, footprint, run_overhead, symbolize, viewer, vs_bcc
from tests.benchmarks.common import PPROF, Settings, machine
from tests.benchmarks.output import say, write_result

BENCHMARKS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    attribution.NAME: attribution.run,
    vs_bcc.NAME: vs_bcc.run,
    run_overhead.NAME: run_overhead.run,
    viewer.NAME: viewer.run,
    delivery.NAME: delivery.run,
    symbolize.NAME: symbolize.run,
    footprint.NAME: footprint.run,
    bpf_cost.NAME: bpf_cost.run,
}


def main() -> int:
    settings = Settings.from_env()
    unknown = [n for n in settings.only if n not in BENCHMARKS]
    if unknown:
        print(f"bench: unknown benchmark(s) in BENCH_ONLY: {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench: needs root (BPF); run `sudo make bench`", file=sys.stderr)
        return 1
    if not PPROF.exists():
        print(f"bench: {PPROF} missing; `make test-deps` builds it", file=sys.stderr)
        return 1
    names = list(settings.only or BENCHMARKS)
    host = machine()
    say(f"hostflame benchmarks: {', '.join(names)}; reps {settings.reps}{' (quick)' if settings.quick else ''}; "
        f"{host['nproc']} CPUs, {host['cpu_model']}, kernel {host['kernel']}, "
        f"load {' '.join(host['loadavg_at_start'])}")
    say(f"results go to {settings.out_dir}/<name>.json\n")
    summary: dict[str, Any] = {"machine": host, "benchmarks": {}}
    failed = missed = 0
    for name in names:
        started = time.monotonic()
        try:
            result = BENCHMARKS[name](settings)
        except Exception as exc:  # one benchmark failing must not hide the others' numbers
            failed += 1
            traceback.print_exc()
            say(f"{name}: FAILED: {exc}\n")
            summary["benchmarks"][name] = {"error": str(exc)}
            continue
        summary["benchmarks"][name] = {"targets": result["targets"], "medians": result["medians"],
                                       "seconds": time.monotonic() - started, "json": result["json"]}
        missed += sum(not t["met"] for t in result["targets"].values())
    say("summary")
    for name, entry in summary["benchmarks"].items():
        if "error" in entry:
            say(f"  {name:<13} FAILED  {entry['error']}")
            continue
        for t in entry["targets"].values():
            say(f"  {name:<13} {'MET   ' if t['met'] else 'MISSED'}  {t['target']} (value {t['value']:.3f})")
    write_result(settings, "summary", summary)
    if failed:
        return 1
    return 1 if missed and os.environ.get("BENCH_STRICT", "") not in ("", "0") else 0


if __name__ == "__main__":
    sys.exit(main())
