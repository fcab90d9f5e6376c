"""The daemon without bcc: the helper hands fds over, the agent drives them with plain
syscalls, counts losslessly, never maps LLVM, and the governor really lowers the rate."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent import bpf_abi, bpf_object
from agent.bpf_handover import LoadOptions
from agent.drain import DrainedSample, Drainer
from agent.fd_sampler import FdSampler
from tests.integration.conftest import HOSTFLAME

pytestmark = [pytest.mark.bpf, pytest.mark.root]

LIBRARIES_OF_A_COMPILER = re.compile(r"libbcc|libLLVM|libclang", re.IGNORECASE)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from the kernel's own account in /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_fd_sampler_counts_every_sample_taken(workload: subprocess.Popen[bytes]) -> None:
    # GIVEN the program loaded by the helper and attached by this (bcc-free) process at 997 Hz
    sampler = FdSampler(LoadOptions(frequency_hz=997))
    events = []
    drainer = Drainer(sampler, events.extend)
    drained = []
    try:
        sampler.attach()
        cpu_before = cpu_seconds(workload.pid)
        # WHEN it samples for 3 s, drained every 0.5 s, then stops
        for _ in range(6):
            events.extend(sampler.poll_events(100))
            time.sleep(0.4)
            drained.extend(drainer.drain())
        sampler.detach()
        cpu_used = cpu_seconds(workload.pid) - cpu_before
        drained.extend(drainer.drain_all())
        stats = drainer.stats()
        map_bytes = sampler.map_memory_bytes()
    finally:
        sampler.close()
    c = stats.counters
    # THEN taken = attributed + idle + filtered + lost, and everything counted was drained
    assert c["taken"] == c["counted"] + c["idle"] + c["filtered"] + c["lost_counts_map_full"], c
    assert c["counted"] == stats.drained == sum(s.count for s in drained)
    assert stats.stacks_missing == 0
    # AND the workload got about its CPU time (the kernel's account) x 997 Hz, with user stacks
    mine = [s for s in drained if s.pid == workload.pid]
    expected = cpu_used * 997
    assert 0.8 * expected <= sum(s.count for s in mine) <= 1.2 * expected + 20, (c, cpu_used)
    assert any(s.user_addrs for s in mine)
    # AND its process was announced through the perf buffer read with mmap
    assert any(e.pid == workload.pid for e in events)
    # AND the maps' kernel memory is known
    assert map_bytes > 1 << 20


def test_a_waiting_event_read_ends_with_the_first_new_process_or_a_signal(workload_exe: Path) -> None:
    # GIVEN the sampler attached, every event so far read, a handler for SIGUSR1, and
    # signals set to end event waits
    sampler = FdSampler(LoadOptions(frequency_hz=997))
    started: list[subprocess.Popen[bytes]] = []
    caught: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: caught.append(signum))
    try:
        with sampler.signals_end_waits():
            sampler.attach()
            time.sleep(0.2)
            sampler.poll_events(0)
            # WHEN a process starts while a read waits up to a minute
            timer = threading.Timer(0.3, lambda: started.append(subprocess.Popen([str(workload_exe), "5"])))
            timer.start()
            reads = [sampler.poll_events(60_000)]
            timer.join()
            while not any(e.pid == started[0].pid and e.kind == bpf_abi.EVENT_NEW_PROCESS for e in reads[-1]):
                assert len(reads) < 20, reads  # (the forked child is sampled as a process before its exec)
                reads.append(sampler.poll_events(60_000))
            # THEN each read came back with events, the last with the new process's first
            # sample: one event wakes the reader, with no waiting for a page of them or the timeout
            assert all(reads), reads
            # WHEN a signal arrives while a read waits up to a minute with nothing to read
            started[0].kill()
            started[0].wait()
            time.sleep(0.2)
            sampler.poll_events(0)
            sampler.detach()
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            before = time.monotonic()
            assert sampler.poll_events(60_000) == []
            waited = time.monotonic() - before
    finally:
        signal.signal(signal.SIGUSR1, previous)
        for proc in started:
            proc.kill()
            proc.wait()
        sampler.close()
    # THEN the handler ran and the read ended with it, not with the timeout
    assert caught == [signal.SIGUSR1]
    assert waited < 30, waited


def test_daemon_never_maps_bcc_or_llvm(tmp_path: Path) -> None:
    # GIVEN `hostflame run`, once it says it is sampling
    daemon = subprocess.Popen([str(HOSTFLAME), "run", "--interval", "2", "--export-dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            lines.append(line)
            if "profiling every CPU" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        time.sleep(2.5)  # past the first interval: symbolization ran too
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        fd_targets = [os.readlink(p) for p in Path(f"/proc/{daemon.pid}/fd").iterdir()]
        children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()
    finally:
        daemon.terminate()
        daemon.wait(10)
        reader.join(5)
    # THEN neither bcc nor LLVM nor clang is mapped in the daemon
    assert not LIBRARIES_OF_A_COMPILER.findall(maps), LIBRARIES_OF_A_COMPILER.findall(maps)[:3]
    # AND the helper that compiled is gone, while the daemon holds the maps and programs
    assert children == []
    assert fd_targets.count("anon_inode:bpf-map") >= 9, fd_targets
    assert "anon_inode:bpf-prog" in fd_targets
    assert daemon.returncode == 0, "".join(lines)


def test_governor_lowers_the_real_sampling_rate(workload: subprocess.Popen[bytes], tmp_path: Path) -> None:
    # GIVEN a CPU budget nobody can meet, judged every 2 s, and a CPU kept busy
    result = subprocess.run(
        [str(HOSTFLAME), "run", "--duration", "40", "--interval", "2", "--budget-window", "2",
         "--cpu-budget", "0.001", "--export-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    # WHEN the governor has halved the frequency step by step (99, 49, 24, 12, 11 Hz)
    intervals = [(int(m.group(1)), float(m.group(2)), int(m.group(3))) for m in
                 re.finditer(r"interval: (\d+) samples in ([\d.]+) s.*?; (\d+) Hz", result.stderr)]
    # (intervals of a second or more, the final partial one aside, and only those whose previous
    # interval ran at the same rate: a cut's drain can hold samples taken while the previous cut
    # was symbolizing, at the rate before the step)
    steady = zip(intervals[:-2], intervals[1:-1], strict=True)
    low = [samples / seconds for (_, _, before), (samples, seconds, hz) in steady
           if hz <= 12 and before == hz and seconds >= 1.0]
    assert low, result.stderr
    # THEN no interval at 12 Hz or less holds more than 12 Hz x every CPU samples per second
    # (with slack): the kernel really samples less, not just the label
    assert max(low) <= 12 * (os.cpu_count() or 1) * 1.5, result.stderr
    assert intervals[0][2] == 99
    # AND it said so once, and counted the steps; caches were shed only at the floor, 11 Hz
    # (a loaded host stretches the 2 s intervals, so how far it got in 40 s varies)
    assert result.stderr.count("resource governor:") == 1
    steps = [(int(hz), int(throttles), int(sheds)) for hz, throttles, sheds in
             re.findall(r"(\d+) Hz, governor throttles (\d+), cache sheds (\d+)", result.stderr)]
    assert max(t for _, t, _ in steps) in (3, 4), result.stderr
    assert all(hz == 11 for hz, _, sheds in steps if sheds), result.stderr


def load_and_sample(cache_dir: Path, pid: int, seconds: float = 1.0) -> tuple[int, list[DrainedSample]]:
    """Load the program (499 Hz) with ``cache_dir``, sample for ``seconds``, drain: the helper's
    pid (0 when loaded from the cache) and the samples of ``pid``."""
    sampler = FdSampler(LoadOptions(frequency_hz=499), cache_dir=cache_dir)
    try:
        drainer = Drainer(sampler, lambda _events: None)
        sampler.attach()
        time.sleep(seconds)
        sampler.detach()
        return sampler.helper_pid, [s for s in drainer.drain_all() if s.pid == pid]
    finally:
        sampler.close()


def test_compiled_program_is_cached_and_loaded_without_the_helper(
        workload: subprocess.Popen[bytes], tmp_path: Path) -> None:
    # GIVEN an empty cache
    # WHEN the program is loaded twice
    first_helper, _ = load_and_sample(tmp_path, workload.pid, seconds=0)
    records = list((tmp_path / "bpf").glob("profile-*.json"))
    second_helper, mine = load_and_sample(tmp_path, workload.pid)
    # THEN the first came from the compiling helper, which left one record (owner-only)
    assert first_helper > 0
    assert len(records) == 1 and records[0].stat().st_mode & 0o077 == 0
    # AND the second was loaded from it with no helper, and samples the workload with user stacks
    assert second_helper == 0
    assert len(mine) > 0 and any(s.user_addrs for s in mine)


def test_a_record_the_kernel_refuses_is_compiled_again(workload: subprocess.Popen[bytes], tmp_path: Path) -> None:
    # GIVEN a record whose sampling program the verifier rejects (its first instruction jumps
    # out of the program)
    load_and_sample(tmp_path, workload.pid, seconds=0)
    path = bpf_object.cache_file(LoadOptions(), tmp_path)
    raw = json.loads(path.read_text())
    program = next(p for p in raw["programs"] if p["name"] == "on_cpu_sample")
    insns = bytearray(base64.b64decode(program["insns"]))
    insns[:8] = bytes([0x05, 0, 0xff, 0x7f, 0, 0, 0, 0])  # BPF_JA +32767
    program["insns"] = base64.b64encode(bytes(insns)).decode()
    path.write_text(json.dumps(raw))
    # WHEN the program is loaded
    helper, mine = load_and_sample(tmp_path, workload.pid)
    # THEN the helper compiled it again, sampling works, and the record is a good one again
    assert helper > 0
    assert mine
    again = bpf_object.read_record(path)
    assert again is not None
    assert next(p for p in again.programs if p.name == "on_cpu_sample").insns[:8] != bytes(insns[:8])
