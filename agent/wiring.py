"""The one place that picks implementations: bcc loader, symbolizer, session.

In: frequency and pid filter. Out: a started ``Session`` and its sampler, ready to attach.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from agent import host, preflight
from agent.bpf_loader import BccSampler, LoadOptions
from agent.errors import EnvironmentProblem
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
def profiling_session(frequency_hz: int, pids: tuple[int, ...] = (),
                      on_snapshot: Callable[[ProcessInfo], None] | None = None) -> Iterator[tuple[Session, BccSampler]]:
    """Load the sampler and build the session; the sampler is closed on the way out.
    ``on_snapshot`` sees each process when the registry first snapshots it."""
    require_privileges()
    from symbolizer import Symbolizer

    started = time.monotonic()
    sampler = BccSampler(LoadOptions(frequency_hz=frequency_hz, pids=pids))
    log.debug("BPF program loaded in %.2f s", time.monotonic() - started)
    # Parsed symbol tables and kernel symbols persist by build id / boot id across runs.
    symbolizer = Symbolizer(cache_dir=str(host.default_cache_dir() / "symbols"))

    def pin(info: ProcessInfo) -> None:
        symbolizer.pin_process(info.pid, info.mappings)
        if on_snapshot is not None:
            on_snapshot(info)

    session = Session(sampler, symbolizer, SessionSettings(frequency_hz=frequency_hz), pin=pin)
    try:
        yield session, sampler
    finally:
        sampler.close()

