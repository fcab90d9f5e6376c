"""``hostflame record``: sample for a fixed time, then write every requested output.

In: a validated ``RecordConfig``. Out: files (atomically written), the top functions on
stdout, one summary line in the log. SIGINT ends sampling early; what was sampled is kept.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from agent.config import RecordConfig
from agent.errors import EXIT_OK
from agent.wiring import profiling_session

log = logging.getLogger(__name__)


def record(config: RecordConfig) -> int:
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    with profiling_session(config.frequency_hz, config.pids) as (session, sampler):
        previous = signal.signal(signal.SIGINT, on_signal)
        try:
            sampler.attach()
            session.start()
            deadline = time.monotonic() + config.duration_s
            log.info("sampling %s at %d Hz for %g s", "pids " + ",".join(map(str, config.pids))
                     if config.pids else "every CPU", config.frequency_hz, config.duration_s)
            while not stop and (remaining := deadline - time.monotonic()) > 0:
                session.tick(remaining)
            ended = time.monotonic()
            sampler.detach()
            log.info("sampling stopped; symbolizing and writing")
            session.final_drain()
        finally:
            signal.signal(signal.SIGINT, previous)
        profile = session.take_profile(ended)
        stats = session.stats()
        registry = session.registry.stats

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
