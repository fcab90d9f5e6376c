"""Real podman containers under `hostflame run`: each container is its own target, named from
podman's files on disk; a container that exits (and is removed) mid-interval keeps its samples
and labels. Series come from a fake Pyroscope; their profiles are read by Google's pprof."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_backend import FakeServer, decode_push, fake_server
from tests.integration.conftest import HOSTFLAME, INSIDE, PODMAN, PODMAN_RUN, pprof_traces, stop_with_sigterm

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.slow]

LEAVES = ("leaf_a", "leaf_b")


def start_container(image: str, name: str, seconds: str) -> tuple[str, int]:
    """A detached --rm container running the workload; (id, host pid)."""
    cid = subprocess.run([*PODMAN_RUN, "-d", "--rm", "--name", name, image, INSIDE, seconds],
                         check=True, capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1]
    pid = subprocess.run([*PODMAN, "inspect", "--format", "{{.State.Pid}}", cid], capture_output=True, text=True,
                         timeout=60, check=False).stdout.strip()
    return cid, int(pid or 0)


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "0", name], capture_output=True, timeout=60, check=False)


def series_of(pyro: FakeServer, cid: str) -> list[Any]:
    return [s for r in list(pyro.requests) for s in decode_push(r.body) if s.labels.get("container_id") == cid]


def start_daemon(pyro: FakeServer, interval: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(HOSTFLAME), "run", "--interval", interval, "--pyroscope-url", pyro.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond: Any, daemon: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.poll() is None, daemon.communicate()[1]
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def leaf_samples(pprof_tool: Path, profile: bytes, path: Path) -> tuple[int, int, set[str]]:
    """(samples, samples under main with a workload leaf, pids) of one pushed profile."""
    path.write_bytes(profile)
    traces = pprof_traces(pprof_tool, path)
    named = sum(t.value for t in traces if t.frames[0] in LEAVES and "main" in t.frames)
    return sum(t.value for t in traces), named, {p for t in traces for p in t.labels.get("pid", [])}


def test_two_containers_of_one_binary_are_separate_targets(image: str, names: list[str], tmp_path: Path,
                                                           pprof_tool: Path) -> None:
    # GIVEN two podman containers running the same binary
    tag = secrets.token_hex(3)
    names.extend([f"hf-web-{tag}", f"hf-batch-{tag}"])
    started = [start_container(image, name, "60") for name in names]
    with fake_server() as pyro:
        # WHEN the daemon runs for a few intervals
        daemon = start_daemon(pyro, "2")
        try:
            wait_for(lambda: all(len(series_of(pyro, cid)) >= 2 for cid, _ in started), daemon)
        finally:
            err, _ = stop_with_sigterm(daemon)
    assert daemon.returncode == 0, err
    # THEN each container has its own series: its id, its name from podman's files as service_name
    for (cid, pid), name in zip(started, names, strict=True):
        for s in series_of(pyro, cid):
            assert s.labels["service_name"] == name and s.labels["container_name"] == name, s.labels
            assert "pid" not in s.labels and "exe" not in s.labels
            # AND its profiles hold only that container's process, named under main
            total, named, pids = leaf_samples(pprof_tool, s.profiles[0], tmp_path / f"{name}.pb.gz")
            assert total > 0 and pids == {str(pid)}, (pids, pid)
            assert named >= 0.8 * total


def test_container_that_exits_mid_interval_keeps_samples_and_labels(image: str, names: list[str], tmp_path: Path,
                                                                     pprof_tool: Path) -> None:
    tag = secrets.token_hex(3)
    name = f"hf-brief-{tag}"
    names.append(name)
    with fake_server() as pyro:
        # GIVEN the daemon with a 6 s interval, sampling
        daemon = start_daemon(pyro, "6")
        try:
            wait_for(lambda: "profiling every CPU" in _peek(daemon), daemon, 60)
            # WHEN a container works for 1.5 s, exits and is removed inside the interval; its shell
            # prints its children's CPU time (cutime, cstime of /proc/self/stat) on the way out
            cid = subprocess.run([*PODMAN_RUN, "-d", "--name", name, image, "/bin/sh", "-c",
                                  f"{INSIDE} 1.5; cat /proc/$$/stat"], check=True, capture_output=True, text=True,
                                 timeout=120).stdout.strip().splitlines()[-1]
            subprocess.run([*PODMAN, "wait", cid], check=True, capture_output=True, timeout=60)
            stat = subprocess.run([*PODMAN, "logs", cid], check=True, capture_output=True, text=True,
                                  timeout=60).stdout
            subprocess.run([*PODMAN, "rm", "-f", cid], check=True, capture_output=True, timeout=60)
            wait_for(lambda: series_of(pyro, cid), daemon, 30)
        finally:
            err, _ = stop_with_sigterm(daemon)
    # THEN its interval still has a series with its id and name, and its samples named under main
    series = series_of(pyro, cid)
    assert series, err
    total = named = 0
    for i, s in enumerate(series):
        assert s.labels["container_name"] == name and s.labels["service_name"] == name, s.labels
        t, n, _ = leaf_samples(pprof_tool, s.profiles[0], tmp_path / f"brief{i}.pb.gz")
        total, named = total + t, named + n
    # AND as many samples as the workload's own CPU time gives at 99 Hz (clock ticks of 10 ms)
    fields = stat.rpartition(")")[2].split()
    expected = (int(fields[13]) + int(fields[14])) / 100 * 99
    assert expected > 10, stat
    assert 0.7 * expected <= total <= 1.2 * expected + 5, (total, expected)
    assert named >= 0.8 * total


_stderr_seen: dict[int, str] = {}


def _peek(daemon: subprocess.Popen[str]) -> str:
    """The daemon's stderr so far, read without blocking (its log lines are short)."""
    import os
    import select

    assert daemon.stderr is not None
    fd = daemon.stderr.fileno()
    os.set_blocking(fd, False)
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        _stderr_seen[daemon.pid] = _stderr_seen.get(daemon.pid, "") + chunk.decode(errors="replace")
    return _stderr_seen.get(daemon.pid, "")
