"""``hostflame record``: sample for a fixed time, then write every requested output.

In: a validated ``RecordConfig``. Out: files (atomically written), the top functions on
stdout, one summary line in the log. SIGINT ends sampling early; what was sampled is kept.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING

from agent.config import RecordConfig
from agent.errors import EXIT_OK
from agent.wiring import profiling_session

if TYPE_CHECKING:
    from agent.drain import DrainStats
    from agent.model import Profile
    from agent.processes import RegistryStats

log = logging.getLogger(__name__)


def sample_profile(frequency_hz: int, pids: tuple[int, ...], duration_s: float) -> tuple[Profile, DrainStats,
                                                                                       RegistryStats]:
    """Sample every CPU (or ``pids``) for ``duration_s`` (SIGINT ends it early, keeping what was
    sampled) and return the profile with the drain and registry counters."""
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    with profiling_session(frequency_hz, pids) as (session, sampler), sampler.signals_end_waits():
        previous = signal.signal(signal.SIGINT, on_signal)
        try:
            sampler.attach()
            session.start()
            deadline = time.monotonic() + duration_s
            log.info("sampling %s at %d Hz for %g s", "pids " + ",".join(map(str, pids))
                     if pids else "every CPU", frequency_hz, duration_s)
            while not stop and (remaining := deadline - time.monotonic()) > 0:
                session.tick(remaining)
            ended = time.monotonic()
            sampler.detach()
            log.info("sampling stopped; symbolizing and writing")
            session.final_drain()
        finally:
            signal.signal(signal.SIGINT, previous)
        return session.take_profile(ended), session.stats(), session.registry.stats


def record(config: RecordConfig) -> int:
    profile, stats, registry = sample_profile(config.frequency_hz, config.pids, config.duration_s)

    from agent.exporters.files import write_outputs
    from agent.report import format_top, top_functions

    write_outputs(profile, config.outputs)
    c = stats.counters
    log.info(
        "samples taken %d, attributed %d, idle %d, lost %d (counts map full); processes %d "
        "(%d gone before their snapshot); wrote %s",
        c["taken"], stats.drained, c["idle"], stats.lost, registry.snapshots + registry.snapshots_gone,
        registry.snapshots_gone, ", ".join(map(str, config.outputs)),
    )
    if config.top:
        print(format_top(top_functions(profile, config.top)))
    return EXIT_OK
