"""Benchmark: ``hostflame symbolize`` against ``addr2line -a -f -i -C`` on 10 000 random .text
addresses of the pyenv build's libpython3.11.so.1.0 (full DWARF 5), side by side in one run.

Per rep: addr2line's wall time and peak RSS; hostflame cold (empty cache dir), and warm (a new
process, the cache dir the cold run filled; and, reported beside it, on 10 000 other addresses,
answered through the DWARF index restored from that cache); in-process warm lookups per second (a second pass
over the same addresses in one ``FileSymbolizer``); agreement: the share of addresses whose
every frame has the same function and line as addr2line's (files are not compared: binutils
names the CU's file for some rows where libdw names the header).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import Settings, machine, median
from tests.benchmarks.output import say, target, write_result

NAME = "symbolize"
LIBPYTHON = Path("/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0")
ADDRESSES = 10_000
HOSTFLAME = [sys.executable, "-m", "agent.cli", "symbolize", "-a", "-f", "-i"]
IN_PROCESS = """
import sys, time
from symbolizer.offline import FileSymbolizer
addrs = [int(line, 16) for line in open(sys.argv[2])]
f = FileSymbolizer(sys.argv[1])
for a in addrs: f.frames(a)
started = time.perf_counter()
for _ in range(20):
    for a in addrs: f.frames(a)
print(20 * len(addrs) / (time.perf_counter() - started))
"""


def _text_range(path: Path) -> tuple[int, int]:
    out = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if " .text " in line:
            fields = line.split("]", 1)[1].split()
            return int(fields[2], 16), int(fields[4], 16)
    raise RuntimeError(f"{path} has no .text")


def _timed(argv: list[str], stdin: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS MB from wait4's rusage, stdout) of one child."""
    with stdin.open() as source:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=source, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, out


def _blocks(text: str) -> list[list[tuple[str, str]]]:
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("0x"):
            blocks.append([])
        else:
            blocks[-1].append(line)
    return [[(f, loc.rsplit(":", 1)[1].split(" ")[0]) for f, loc in zip(b[::2], b[1::2], strict=True)]
            for b in blocks]


def run(settings: Settings) -> dict[str, Any]:
    start, size = _text_range(LIBPYTHON)
    rng = random.Random(2026)
    work = Path(tempfile.mkdtemp(prefix="hf-bench-sym-"))
    addrs = work / "addrs.txt"
    addrs.write_text("".join(f"{rng.randrange(start, start + size):x}\n" for _ in range(ADDRESSES)))
    others = work / "others.txt"  # another 10 000, to time a warm cache on addresses it has not seen
    others.write_text("".join(f"{rng.randrange(start, start + size):x}\n" for _ in range(ADDRESSES)))
    reps = []
    for rep in range(settings.reps):
        cache = work / f"cache-{rep}"
        a2l_wall, a2l_rss, expected = _timed(["addr2line", "-a", "-f", "-i", "-C", "-e", str(LIBPYTHON)], addrs)
        ours = [*HOSTFLAME, "-e", str(LIBPYTHON), "--cache-dir", str(cache)]
        cold_wall, cold_rss, cold_out = _timed(ours, addrs)
        warm_wall, warm_rss, warm_out = _timed(ours, addrs)
        a2l_new_wall, _, expected_new = _timed(["addr2line", "-a", "-f", "-i", "-C", "-e", str(LIBPYTHON)], others)
        new_wall, new_rss, new_out = _timed(ours, others)
        rate = float(subprocess.run([sys.executable, "-c", IN_PROCESS, str(LIBPYTHON), str(addrs)], check=True,
                                    capture_output=True, text=True).stdout)
        theirs, mine = _blocks(expected), _blocks(cold_out)
        agree = sum(a == b for a, b in zip(theirs, mine, strict=True)) / len(theirs) * 100
        new_pairs = zip(_blocks(expected_new), _blocks(new_out), strict=True)
        agree_new = sum(a == b for a, b in new_pairs) / ADDRESSES * 100
        reps.append({"addr2line_s": a2l_wall, "addr2line_rss_mb": a2l_rss, "cold_s": cold_wall, "cold_rss_mb": cold_rss,
                     "warm_s": warm_wall, "warm_rss_mb": warm_rss, "in_process_per_s": rate,
                     "addr2line_new_s": a2l_new_wall, "warm_new_addresses_s": new_wall, "warm_new_rss_mb": new_rss,
                     "agreement_new_percent": agree_new,
                     "agreement_percent": agree, "warm_equals_cold": warm_out == cold_out})
    med = {key: median([r[key] for r in reps]) for key in reps[0] if key != "warm_equals_cold"}
    cold_x, warm_x = med["cold_s"] / med["addr2line_s"], med["warm_s"] / med["addr2line_s"]
    peak = max(max(r["cold_rss_mb"], r["warm_rss_mb"], r["warm_new_rss_mb"]) for r in reps)

    result: dict[str, Any] = {
        "name": NAME, "machine": machine(), "settings": {"reps": settings.reps, "addresses": ADDRESSES},
        "commands": {"addr2line": f"addr2line -a -f -i -C -e {LIBPYTHON} < addrs",
                     "hostflame": " ".join([*HOSTFLAME, "-e", str(LIBPYTHON), "--cache-dir", "DIR"]) + " < addrs"},
        "reps": reps, "medians": med,
        "targets": {
            "cold": target("cold <= 10x addr2line", cold_x, cold_x <= 10),
            "warm": target("warm new process <= 2x addr2line", warm_x, warm_x <= 2),
            "in_process": target(">= 500 000 addresses/s in-process warm", med["in_process_per_s"],
                                 med["in_process_per_s"] >= 500_000),
            "rss": target("peak RSS <= 250 MB", peak, peak <= 250),
            "agreement": target(">= 99 % of addresses agree with addr2line", med["agreement_percent"],
                                med["agreement_percent"] >= 99),
        },
    }
    result["json"] = str(write_result(settings, NAME, result))
    lines = [f"symbolize: {ADDRESSES} random .text addresses of {LIBPYTHON}, {settings.reps} reps"]
    lines += [f"  rep {i}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
              for i, r in enumerate(reps, 1)]
    lines += [f"  {t['target']}: {'MET' if t['met'] else 'MISSED'} ({t['value']:.3g})"
              for t in result["targets"].values()]
    say("\n".join(lines) + "\n")
    return result
