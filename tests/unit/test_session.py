"""The session's wake-ups: it drains when new stacks pile up in the maps, not on a clock; it
waits for process events until its next look at the maps; a burst of events is read in
batches. The real sampler's side (an event ends a wait at once) is
tests/integration/test_fd_sampler.py."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

from agent import bpf_abi
from agent.bpf_abi import ProcessEvent
from agent.model import Mapping, Symbolized
from agent.session import Session, SessionSettings
from tests.unit.test_drain import ScriptedSampler, entry

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"


class EventSampler(ScriptedSampler):
    """A scripted sampler whose event reads hand out ``pending`` and log their timeouts."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[ProcessEvent] = []
        self.timeouts: list[int] = []

    def poll_events(self, timeout_ms: int) -> list[ProcessEvent]:
        self.timeouts.append(timeout_ms)
        out, self.pending = self.pending, []
        return out


class NoSymbols:
    def symbolize_user(self, pid: int, mappings: Sequence[Mapping], addrs: Sequence[int]) -> list[Symbolized]:
        return []

    def symbolize_kernel(self, addrs: Sequence[int]) -> list[Symbolized]:
        return []

    def forget_unused(self) -> None:
        pass

    def release_when_idle(self) -> None:
        pass


def session(sampler: EventSampler, check_s: float, new_keys: int = 3) -> Session:
    s = Session(sampler, NoSymbols(), SessionSettings(proc_root=FIXTURES, drain_check_s=check_s,
                                                      drain_new_keys=new_keys))
    s.start()
    return s


def flips(sampler: EventSampler) -> int:
    return sum(call.startswith("flip") for call in sampler.calls)


def test_a_drain_waits_until_enough_new_keys_are_in_the_maps() -> None:
    # GIVEN a session that looks at the maps on every tick and drains at 3 new keys
    sampler = EventSampler()
    s = session(sampler, check_s=0.0)
    sampler.record(0, entry(-errno.EFAULT, -errno.EFAULT, 5))
    sampler.record(0, entry(-errno.EFAULT, -errno.EFAULT, 5))
    # WHEN two keys wait: no drain, however often it ticks
    for _ in range(3):
        s.tick(0.0)
    assert flips(sampler) == 0
    # WHEN a third arrives: one drain, and the keys it read no longer count
    sampler.record(0, entry(-errno.EFAULT, -errno.EFAULT, 5))
    s.tick(0.0)
    s.tick(0.0)
    assert flips(sampler) == 1
    assert s.drainer.keys_since_drain() == 0
    assert s.stats().drained == 15


def test_a_quiet_tick_waits_for_events_until_its_next_look_at_the_maps() -> None:
    # GIVEN a session that looks at the maps every 5 s
    sampler = EventSampler()
    s = session(sampler, check_s=5.0)
    # WHEN the caller could wait a minute, then only 0.2 s
    s.tick(60.0)
    s.tick(0.2)
    # THEN the first wait ends by the next look at the maps, the second by the caller
    assert 4000 < sampler.timeouts[0] <= 5000
    assert sampler.timeouts[1] <= 200
    assert flips(sampler) == 0 and f"counter{bpf_abi.COUNTER_NEW_KEYS}" not in sampler.calls


def test_after_a_read_that_found_events_the_next_one_gathers_instead_of_waiting() -> None:
    # GIVEN a session that has just read a process event
    sampler = EventSampler()
    s = session(sampler, check_s=5.0)
    sampler.pending = [ProcessEvent(kind=bpf_abi.EVENT_NEW_PROCESS, pid=4242, incarnation=1, time_ns=1,
                                    comm="server")]
    s.tick(60.0)
    # WHEN it ticks again (it sleeps out EVENT_BATCH_S first: the rest of a burst gathers)
    s.tick(60.0)
    # THEN that read does not wait; the next, with nothing new, waits again
    s.tick(60.0)
    assert sampler.timeouts[1] == 0
    assert sampler.timeouts[2] > 1000
