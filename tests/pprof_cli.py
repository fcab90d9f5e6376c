"""Run Google's pprof on a file and read its text reports back (the independent oracle)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

Trace = tuple[tuple[str, ...], int, tuple[tuple[str, str], ...]]  # frames leaf first, count, labels

_COUNT_LINE = re.compile(r"^\s*(\d+)\s{3}(\S.*)$")
_LABEL_LINE = re.compile(r"^\s*([^:\s]+):\s+(.*)$")


def run_pprof(tool: Path, *args: str | Path) -> str:
    """pprof's stdout; fails the test when pprof exits non-zero or says anything on stderr."""
    proc = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"pprof {args} exited {proc.returncode}: {proc.stderr}"
    assert proc.stderr == "", f"pprof {args} complained: {proc.stderr}"
    return proc.stdout


def traces(tool: Path, path: Path) -> list[Trace]:
    """The samples of ``path`` as ``pprof -traces`` prints them (sample counts), sorted."""
    out = run_pprof(tool, "-traces", "-sample_index=samples", "-symbolize=none", path)
    blocks = out.split("-----------+-------------------------------------------------------\n")[1:]
    result: list[Trace] = []
    for block in filter(str.strip, blocks):
        labels: list[tuple[str, str]] = []
        frames: list[str] = []
        count = -1
        for line in block.splitlines():
            match = _COUNT_LINE.match(line)
            if count < 0 and match:
                count = int(match.group(1))
                frames.append(match.group(2).strip())
            elif count < 0:
                label = _LABEL_LINE.match(line)
                assert label, f"unexpected line in pprof -traces: {line!r}"
                labels.append((label.group(1), label.group(2).strip()))
            elif line.strip():
                frames.append(line.strip())
        result.append((tuple(frames), count, tuple(labels)))
    return sorted(result)
