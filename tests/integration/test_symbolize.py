"""Names, files and lines end to end: real BPF, a real process, Google pprof and addr2line as judges."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import hostflame, pprof_text

pytestmark = [pytest.mark.bpf, pytest.mark.root]


def _function_lines(exe: Path, name: str) -> set[tuple[str, int]]:
    """(file, line) addr2line gives for every byte of ``name`` (its range from nm -S)."""
    out = subprocess.run(["nm", "-S", str(exe)], check=True, capture_output=True, text=True).stdout
    start, size = next((int(f[0], 16), int(f[1], 16)) for f in (line.split() for line in out.splitlines())
                       if len(f) == 4 and f[3] == name)
    text = "".join(f"{a:x}\n" for a in range(start, start + size))
    got = subprocess.run(["addr2line", "-e", str(exe)], input=text, check=True, capture_output=True, text=True)
    lines = set()
    for location in got.stdout.splitlines():
        file, _, number = location.partition(":")
        number = number.split(" ")[0]
        if number.isdigit():
            lines.add((file, int(number)))
    return lines


def test_recorded_frames_carry_addr2lines_file_and_line(
    workload: subprocess.Popen[bytes], workload_exe: Path, tmp_path: Path, pprof_tool: Path
) -> None:
    # GIVEN the split workload built with -g
    out = tmp_path / "p.pb.gz"
    # WHEN it is recorded
    result = hostflame("record", "--duration", "3", "--pid", str(workload.pid), "-o", str(out), "--top", "0")
    assert result.returncode == 0, result.stderr
    # THEN every leaf_a location pprof shows is a file:line addr2line gives for leaf_a's code
    text = pprof_text(pprof_tool, "-traces", "-lines", str(out))
    seen = {(m.group(1), int(m.group(2))) for m in re.finditer(r"leaf_a (\S+):(\d+)", text)}
    assert seen and seen <= _function_lines(workload_exe, "leaf_a")
    # AND the binary's mapping says it has functions, file names and line numbers
    raw = pprof_text(pprof_tool, "-raw", str(out))
    mapping = next(line for line in raw.splitlines() if re.match(r"\d+: 0x", line) and str(workload_exe) in line)
    assert "[FN][FL][LN]" in mapping


def test_doctor_reports_the_workload_fully_named(workload: subprocess.Popen[bytes], workload_exe: Path) -> None:
    # WHEN doctor samples the workload alone
    result = hostflame("doctor", "--duration", "2", "--pid", str(workload.pid))
    assert result.returncode == 0, result.stderr
    # THEN its binary's row shows every frame named and with a line
    row = next(line for line in result.stdout.splitlines() if line.endswith(str(workload_exe)))
    frames, named, lined, _ = row.split(maxsplit=3)
    assert int(frames) > 50 and named == "100.0%" and lined == "100.0%"
