"""`hostflame run`: one pprof per interval in the export dir; SIGTERM flushes and exits 0."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import HOSTFLAME, pprof_traces, stop_with_sigterm

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.slow]


def test_run_writes_each_interval_and_flushes_on_sigterm(
    workload: subprocess.Popen[bytes], workload_exe: Path, tmp_path: Path, pprof_tool: Path
) -> None:
    # GIVEN the daemon with a 2 s interval, writing one file per target per interval
    export = tmp_path / "profiles" / "nested"
    daemon = subprocess.Popen([str(HOSTFLAME), "run", "--interval", "2", "--export-dir", str(export)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ours = f"*-{workload_exe.name}.pb.gz"  # the workload's target: service_name is its executable's name
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(export.glob(ours))) < 2:
            assert daemon.poll() is None, daemon.communicate()[1]
            time.sleep(0.2)
        assert len(list(export.glob(ours))) >= 2
        time.sleep(1.0)  # half an interval: the partial one
        before = set(export.glob(ours))
        # WHEN it gets SIGTERM mid-interval
        err, took = stop_with_sigterm(daemon, timeout=10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    # THEN it exits 0 within 5 s, having written the workload's partial interval too
    assert daemon.returncode == 0, err
    assert took < 5, took
    workload_files = sorted(export.glob(ours))
    assert len(workload_files) == len(before) + 1
    # AND every file is a profile Google's pprof reads; the workload's hold only the workload,
    # its leaves under their callers
    for f in sorted(export.glob("*.pb.gz")):
        assert pprof_traces(pprof_tool, f), f
    for f in workload_files:
        traces = pprof_traces(pprof_tool, f)
        assert all(t.labels.get("pid") == [str(workload.pid)] for t in traces)
    assert any(t.frames[0] in ("leaf_a", "leaf_b") and "main" in t.frames
               for t in pprof_traces(pprof_tool, workload_files[1]))
    assert not list(export.glob("*.tmp*")) and not list(export.glob(".*"))
    # AND one summary line per interval was logged
    assert err.count("interval:") >= 2


def test_processes_gone_before_they_were_read_share_a_file_per_interval(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN exec churn: a shell running /bin/true in a loop (each lives about a millisecond, so
    # most are gone before the agent, told of their first sample, can read them)
    export = tmp_path / "profiles"
    churn = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"])
    try:
        # WHEN the daemon runs for two 3 s intervals
        result = subprocess.run([str(HOSTFLAME), "run", "--duration", "6", "--interval", "3", "--export-dir",
                                 str(export)], capture_output=True, text=True, timeout=120, check=False)
    finally:
        churn.kill()
        churn.wait()
    assert result.returncode == 0, result.stderr
    # THEN the `true` samples of many processes are in a few files (one per interval for those
    # never read, plus one each for the few read in time), every sample with its own pid
    files = sorted(export.glob("*-true*.pb.gz"))
    pids = {pid for f in files for t in pprof_traces(pprof_tool, f) for pid in t.labels.get("pid", [])}
    assert len(pids) >= 20, (len(pids), [f.name for f in files])
    assert len(files) * 3 <= len(pids), (len(pids), [f.name for f in files])
