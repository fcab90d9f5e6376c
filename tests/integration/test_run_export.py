"""`hostflame run` end to end: real BPF, a real workload, exported to fake Pyroscope and OTLP
servers on 127.0.0.1 and to disk; labels and values checked against the workload that ran."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fake_backend import decode_otlp, decode_push, fake_server, free_port
from tests.integration.conftest import HOSTFLAME, pprof_traces, stop_with_sigterm

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.slow]


def _wait(cond: object, timeout: float, daemon: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.poll() is None, daemon.communicate()[1]
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_run_pushes_labelled_targets_to_pyroscope_otlp_and_disk(
    workload: subprocess.Popen[bytes], workload_exe: Path, tmp_path: Path, pprof_tool: Path
) -> None:
    metrics_port = free_port()
    export = tmp_path / "profiles"
    with fake_server() as pyro, fake_server() as otlp:
        # GIVEN the daemon with a 2 s interval, both network exporters, a disk and a static label
        daemon = subprocess.Popen(
            [str(HOSTFLAME), "run", "--interval", "2", "--pyroscope-url", pyro.url, "--otlp-url", otlp.url,
             "--export-dir", str(export), "--label", "env=it", "--metrics-addr", f"127.0.0.1:{metrics_port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def split_series() -> list[tuple[dict[str, str], bytes]]:
                found = []
                for req in list(pyro.requests):
                    for series in decode_push(req.body):
                        if series.labels.get("pid") == str(workload.pid):
                            found.extend((series.labels, p) for p in series.profiles)
                return found

            _wait(lambda: len(split_series()) >= 4, 60, daemon)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            before = len(pyro.requests)
            # WHEN it gets SIGTERM
            err, took = stop_with_sigterm(daemon)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    # THEN it exits 0 in time, having delivered the partial interval too
    assert daemon.returncode == 0, err
    assert took < 8, took
    assert len(pyro.requests) > before
    # AND the workload is its own process target with the series labels of one
    labels, _ = split_series()[1]  # a full interval
    assert labels == {"__name__": "process_cpu", "service_name": workload_exe.name, "host": socket.gethostname(),
                      "pid": str(workload.pid), "exe": str(workload_exe), "env": "it"}
    # AND Google's pprof reads every embedded profile of the workload: only its pid, leaves under
    # main, at most 99 samples/s of one thread, and over all intervals the workload's 3:1 split
    leaf = {"leaf_a": 0, "leaf_b": 0}
    for i, (_, pushed) in enumerate(split_series()):
        path = tmp_path / f"pushed{i}.pb.gz"
        path.write_bytes(pushed)
        traces = pprof_traces(pprof_tool, path)
        assert 0 < sum(t.value for t in traces) <= 230  # <= 2 s x 99 Hz (+ jitter of the interval cut)
        for t in traces:
            assert t.labels.get("pid") == [str(workload.pid)]
            if t.frames[0] in leaf:
                leaf[t.frames[0]] += t.value
                assert "main" in t.frames
    assert 2.0 < leaf["leaf_a"] / max(1, leaf["leaf_b"]) < 4.5, leaf
    # AND every push was a valid profile of one target; all other targets are labelled too
    for req in pyro.requests:
        for series in decode_push(req.body):
            assert series.labels["service_name"] and series.labels["host"] == socket.gethostname()
    # AND OTLP got the same target with the OTel resource attributes
    found = False
    for req in otlp.requests:
        for rp in decode_otlp(req.body).resource_profiles:
            attrs = {a.key: (a.value.string_value or a.value.int_value) for a in rp.resource.attributes}
            if attrs.get("process.pid") == workload.pid:
                found = True
                assert attrs["service.name"] == workload_exe.name
                assert attrs["process.executable.path"] == str(workload_exe)
                assert attrs["process.executable.name"] == workload_exe.name
    assert found
    # AND disk holds one file per target per interval, named after the service
    assert list(export.glob(f"hostflame-*-{workload_exe.name}*.pb.gz"))
    # AND the metrics endpoint counted the deliveries, and the log has one summary per interval
    assert 'hostflame_profiles_sent_total{exporter="pyroscope"}' in metrics
    assert "hostflame_samples_total" in metrics and "hostflame_queue_bytes" in metrics
    assert err.count("interval:") >= 2
    assert "pyroscope sent" in err


def test_sigterm_with_a_backend_that_never_answers_exits_0_after_the_grace_period(tmp_path: Path) -> None:
    # GIVEN a Pyroscope that accepts and never answers, and a 2 s grace period
    with fake_server(lambda _n, _t: None) as pyro:
        env = {**os.environ, "HOSTFLAME_SHUTDOWN_GRACE_S": "2", "HOSTFLAME_PYROSCOPE_TIMEOUT_S": "30"}
        daemon = subprocess.Popen([str(HOSTFLAME), "run", "--interval", "1", "--pyroscope-url", pyro.url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            _wait(lambda: len(pyro.requests) >= 1, 60, daemon)
            err, took = stop_with_sigterm(daemon)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    # THEN it exits 0 within the grace period plus the partial interval's build
    assert daemon.returncode == 0, err
    assert took < 5, took
    assert "dropped" in err and "shutdown" in err
