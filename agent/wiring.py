"""The one place that picks implementations: fd sampler (bcc only in its load helper), symbolizer, session.

In: frequency and pid filter. Out: a started ``Session`` and its sampler, ready to attach.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agent import preflight
from agent.bpf_handover import LoadOptions
from agent.errors import EnvironmentProblem
from agent.fd_sampler import FdSampler
from agent.model import ProcessInfo
from agent.session import Session, SessionSettings

log = logging.getLogger(__name__)


def require_privileges() -> None:
    missing = preflight.missing_required_caps(preflight.effective_caps())
    if missing:
        raise EnvironmentProblem(
            f"not permitted to load BPF (missing {', '.join(missing)}): run as root (prefix sudo) "
            f"or grant {', '.join(preflight.REQUIRED_CAPS)}"
        )


@contextmanager
def profiling_session(frequency_hz: int, pids: tuple[int, ...] = ()) -> Iterator[tuple[Session, FdSampler]]:
    """Load the sampler and build the session; the sampler is closed on the way out."""
    require_privileges()
    from symbolizer import Symbolizer

    started = time.monotonic()
    sampler = FdSampler(LoadOptions(frequency_hz=frequency_hz, pids=pids))
    log.debug("BPF program loaded in %.2f s", time.monotonic() - started)
    symbolizer = Symbolizer()

    def pin(info: ProcessInfo) -> None:
        symbolizer.pin_process(info.pid, info.mappings)

    session = Session(sampler, symbolizer, SessionSettings(frequency_hz=frequency_hz), pin=pin)
    try:
        yield session, sampler
    finally:
        sampler.close()

