"""Integration plumbing: root, built workloads, the real CLI, and Google pprof as the judge."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fixtures.build import build_c

HOSTFLAME = REPO / ".venv" / "bin" / "hostflame"


@pytest.fixture(autouse=True)
def _needs_root(request: pytest.FixtureRequest) -> None:
    if (request.node.get_closest_marker("bpf") or request.node.get_closest_marker("root")) and os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bin")


@pytest.fixture(scope="session")
def split_exe(bin_dir: Path) -> Path:
    return build_c("split", bin_dir)


@pytest.fixture(scope="session")
def short_lived_exe(bin_dir: Path) -> Path:
    return build_c("short_lived", bin_dir)


@pytest.fixture(scope="session")
def broken_chain_exe(bin_dir: Path) -> Path:
    return build_c("broken_chain", bin_dir)


def hostflame(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would."""
    exe = str(HOSTFLAME) if HOSTFLAME.exists() else sys.executable
    cmd = [*prefix, exe, *args] if HOSTFLAME.exists() else [*prefix, exe, "-m", "agent.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture
def workload_exe(split_exe: Path, tmp_path: Path) -> Path:
    """A copy of the split program under a name of its own (its comm, exe and service_name),
    so nothing else running on the host, another test's workload included, shares its target."""
    exe = tmp_path / f"sp{secrets.token_hex(4)}"
    shutil.copy2(split_exe, exe)
    return exe


@pytest.fixture
def workload(workload_exe: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The known-split program, running for the test's duration."""
    proc = subprocess.Popen([str(workload_exe), "60"])
    yield proc
    proc.kill()
    proc.wait()


@dataclass
class Trace:
    """One sample of `pprof -traces`: its value, labels and frames (leaf first)."""

    value: int
    labels: dict[str, list[str]] = field(default_factory=dict)
    frames: list[str] = field(default_factory=list)


def pprof_text(pprof_tool: Path, *args: str) -> str:
    result = subprocess.run([str(pprof_tool), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"pprof {' '.join(args)} refused the file: {result.stderr}"
    return result.stdout


def pprof_traces(pprof_tool: Path, profile: Path) -> list[Trace]:
    """Samples as Google's pprof reads them (sample index: samples/count). The output is
    a header, then blocks between separator lines: label lines ("comm:  x"), then the value
    with the leaf frame, then one caller per line."""
    text = pprof_text(pprof_tool, "-traces", "-sample_index=samples", str(profile))
    traces: list[Trace] = []
    current: Trace | None = None
    in_body = False
    for line in text.splitlines():
        if line.startswith("-----------+"):
            in_body = True
            current = Trace(0)
            traces.append(current)
            continue
        if not in_body or current is None or not line.strip():
            continue
        if not current.frames:
            frame = re.match(r"^\s*(\d+)\s{2,}(.+?)\s*$", line)
            if frame:
                current.value = int(frame.group(1))
                current.frames.append(frame.group(2))
                continue
            label = re.match(r"^\s*(\S+):\s+\[?(.*?)\]?\s*$", line)
            if label:
                current.labels[label.group(1)] = label.group(2).split(" ")
                continue
        current.frames.append(line.strip())
    return [t for t in traces if t.frames]


class Recording:
    """`hostflame record` started in the background; ``wait_sampling`` returns once BPF is
    attached (the log says "sampling"), so a test can start a workload inside the window.
    With ``watch_pid``, the CPU seconds that process had used are read the moment the log
    says sampling started and stopped: ``watched_cpu_s`` is its CPU time while sampled."""

    def __init__(self, *args: str, watch_pid: int = 0):
        self.proc = subprocess.Popen([str(HOSTFLAME), "record", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        self._watch_pid = watch_pid
        self._cpu_marks: list[float] = []
        self._sampling = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if "sampling stopped" in line or ("sampling" in line and not self._sampling.is_set()):
                if self._watch_pid:
                    self._cpu_marks.append(cpu_seconds(self._watch_pid))
                self._sampling.set()

    @property
    def watched_cpu_s(self) -> float:
        assert len(self._cpu_marks) == 2, self._cpu_marks
        return self._cpu_marks[1] - self._cpu_marks[0]

    def wait_sampling(self, timeout: float = 60) -> None:
        assert self._sampling.wait(timeout), "".join(self.stderr_lines)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        # Not communicate(): it would read stderr too, racing the reader thread for its lines.
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.proc.returncode, out, "".join(self.stderr_lines)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_with_sigterm(daemon: subprocess.Popen[str], timeout: float = 20) -> tuple[str, float]:
    """SIGTERM ``daemon`` and wait for it (killed if it outlives ``timeout``): its stderr and
    the seconds it took to exit."""
    sent = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        _, err = daemon.communicate(timeout=timeout)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    return err, time.monotonic() - sent


IMAGE = "localhost/hostflame-test-split:latest"
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
PODMAN_RUN = (*PODMAN, "run", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# The binary's path inside the image; nothing exists at this path on the host.
INSIDE = "/opt/only-in-container/split"


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny image: busybox and the split workload, built static, imported without a registry."""
    work = tmp_path_factory.mktemp("image")
    exe = build_c("split", work, "-static")
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    inside = rootfs / INSIDE.lstrip("/")
    inside.parent.mkdir(parents=True)
    shutil.move(exe, inside)  # the host keeps no copy
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    subprocess.run(["podman", "import", "-q", str(tar), IMAGE], check=True, capture_output=True)
    assert not Path(INSIDE).exists()
    return IMAGE
