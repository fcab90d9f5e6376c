"""The process registry: snapshots per incarnation, pid-reuse refusal, removal after drains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent import processes
from agent.bpf_abi import EVENT_EXEC, EVENT_EXIT, EVENT_NEW_PROCESS, ProcessEvent
from agent.model import ProcessInfo
from agent.processes import CLK_TCK, SWEEP_EVERY_DRAINS, ProcessRegistry, boot_to_monotonic_ns

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"
START_TICKS = 123456  # field 22 of tests/fixtures/proc/4242/stat
STARTED_NS = START_TICKS * 1_000_000_000 // CLK_TCK - boot_to_monotonic_ns()
LATER = STARTED_NS + 5_000_000_000  # first sampled 5 s after it started
EARLIER = STARTED_NS - 5_000_000_000  # "first sampled" before this process existed


def event(kind: int, incarnation: int, pid: int = 4242) -> ProcessEvent:
    return ProcessEvent(kind=kind, pid=pid, incarnation=incarnation, time_ns=incarnation, comm="bpf-comm")


def test_first_sample_event_snapshots_the_process_and_pins_it() -> None:
    # GIVEN a registry over the canned proc root
    pinned: list[ProcessInfo] = []
    reg = ProcessRegistry(FIXTURES, on_snapshot=pinned.append)
    # WHEN BPF announces the first sample of pid 4242
    reg.on_event(event(EVENT_NEW_PROCESS, LATER))
    # THEN the snapshot holds what /proc said, and the symbolizer was told about it
    info = reg.lookup(4242, LATER, "bpf-comm")
    assert info.alive and info.comm == "my (odd) prog" and info.start_time_ticks == START_TICKS
    assert info.cmdline == ("/opt/app/bin/server", "--port", "8080")
    assert info.container_id.startswith("3f2a6c1d") and len(info.mappings) == 9
    assert pinned == [info]
    assert reg.stats.snapshots == 1 and reg.stats.late_snapshots == 0


def test_a_process_that_started_after_the_first_sample_is_a_reused_pid() -> None:
    # GIVEN BPF first sampled pid 4242 before the process now at /proc/4242 started
    reg = ProcessRegistry(FIXTURES)
    reg.on_event(event(EVENT_NEW_PROCESS, EARLIER))
    # THEN the registry refuses its maps: frames of the old process never get the new binary
    info = reg.lookup(4242, EARLIER, "bpf-comm")
    assert not info.alive and info.mappings == () and info.comm == "bpf-comm"
    assert reg.stats.snapshots_gone == 1


def test_unknown_incarnation_is_snapshotted_at_first_sight() -> None:
    reg = ProcessRegistry(FIXTURES)
    info = reg.lookup(4242, LATER, "x")
    assert info.alive and reg.stats.late_snapshots == 1


def test_exited_process_is_kept_until_two_drains_later(tmp_path: Path) -> None:
    # GIVEN a process snapshotted while alive
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES, root)
    reg = ProcessRegistry(root)
    reg.on_event(event(EVENT_NEW_PROCESS, LATER))
    # WHEN it exits and its /proc entry disappears
    reg.on_event(event(EVENT_EXIT, LATER))
    shutil.rmtree(root / "4242")
    # THEN the next drain still finds the snapshot (its samples may sit in either generation)
    reg.end_drain()
    assert reg.lookup(4242, LATER, "x").alive
    reg.end_drain()
    # AND after the second drain it is gone
    assert reg.stats.tracked == 0 and reg.stats.removed == 1


def test_exec_ends_the_old_incarnation_and_the_next_one_is_separate() -> None:
    reg = ProcessRegistry(FIXTURES)
    reg.on_event(event(EVENT_NEW_PROCESS, LATER))
    reg.on_event(event(EVENT_EXEC, LATER))
    reg.on_event(event(EVENT_NEW_PROCESS, LATER + 1000))
    reg.end_drain()
    reg.end_drain()
    assert reg.stats.tracked == 1
    assert reg.lookup(4242, LATER + 1000, "x").alive


def test_exit_of_a_never_snapshotted_incarnation_keeps_its_comm(tmp_path: Path) -> None:
    reg = ProcessRegistry(tmp_path)
    reg.on_event(event(EVENT_EXIT, LATER, pid=7))
    info = reg.lookup(7, LATER, "other")
    assert not info.alive and info.comm == "bpf-comm"


def test_an_incarnation_first_seen_gone_is_removed_without_an_event() -> None:
    # GIVEN a drain that meets a pid no longer in /proc, and no exit event will ever come
    reg = ProcessRegistry(FIXTURES)
    info = reg.lookup(99999, LATER, "gone")
    assert not info.alive and reg.stats.tracked == 1
    # WHEN two more drains end
    reg.end_drain()
    reg.end_drain()
    # THEN it is not tracked any more
    assert reg.stats.tracked == 0 and reg.stats.removed == 1


def test_the_sweep_ends_an_incarnation_whose_process_vanished(tmp_path: Path) -> None:
    # GIVEN a live snapshot of pid 4242, whose /proc entry then disappears without an exit event
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES, root)
    reg = ProcessRegistry(root)
    reg.on_event(event(EVENT_NEW_PROCESS, LATER))
    shutil.rmtree(root / "4242")
    # WHEN the sweep runs (every SWEEP_EVERY_DRAINS drains) and two drains pass after it
    for _ in range(SWEEP_EVERY_DRAINS + 2):
        reg.end_drain()
    # THEN the incarnation is gone from the registry
    assert reg.stats.tracked == 0 and reg.stats.swept == 1


def test_maps_are_re_read_less_often_while_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a live snapshot whose stacks keep asking for fresh maps (a broken frame chain)
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES, root)
    reg = ProcessRegistry(root)
    reg.on_event(event(EVENT_NEW_PROCESS, LATER))
    reads: list[int] = []  # the drains in which /proc was read
    drain = [0]
    real_read_maps = processes.procfs.read_maps

    def counted(proc_root: Path, pid: int) -> object:
        reads.append(drain[0])
        return real_read_maps(proc_root, pid)

    monkeypatch.setattr(processes.procfs, "read_maps", counted)
    # WHEN every one of 40 drains asks, and the maps never change
    for drain[0] in range(40):
        assert reg.refresh_maps(4242, LATER) is None
        reg.end_drain()
    # THEN /proc was read at drains 0, 1, 3, 7, 15 and 31 only: backing off, not 40 times
    assert reads == [0, 1, 3, 7, 15, 31]
    assert reg.stats.map_refreshes == 0


def test_a_changed_map_is_taken_and_the_next_drain_may_look_again(tmp_path: Path) -> None:
    # GIVEN a live snapshot, and a library mapped after it
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES, root)
    reg = ProcessRegistry(root)
    reg.on_event(event(EVENT_NEW_PROCESS, LATER))
    maps = root / "4242" / "maps"
    maps.write_text(maps.read_text() + "7f0000000000-7f0000001000 r-xp 00000000 08:01 777 /usr/lib/libnew.so\n")
    # WHEN a drain asks for fresh maps
    info = reg.refresh_maps(4242, LATER)
    # THEN it gets them (one more mapping), and the same drain does not read again
    assert info is not None and len(info.mappings) == 10
    assert reg.refresh_maps(4242, LATER) is None
    assert reg.stats.map_refreshes == 1
