"""The one place that picks implementations: fd sampler (bcc only in its load helper), symbolizer, session.

In: frequency and pid filter. Out: a started ``Session`` and its sampler, ready to attach.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from agent import host, pprof, preflight
from agent.bpf_handover import LoadOptions
from agent.errors import EnvironmentProblem
from agent.fd_sampler import FdSampler
from agent.model import Mapping, ProcessInfo, Symbolized
from agent.session import Session, SessionSettings

if TYPE_CHECKING:
    from symbolizer import Symbolizer

log = logging.getLogger(__name__)


class SheddableSymbolizer:
    """The symbolizer behind one indirection, so the resource governor can drop every cache
    (parsed symbol tables, memos, pinned files, DWARF) at once by starting afresh. Binaries of
    live processes are reopened through /proc when next needed; the kernel symbols are kept
    (a mapped file: reading them again would free nothing)."""

    def __init__(self) -> None:
        self._inner = self._make()
        self.sheds = 0

    @staticmethod
    def _make(previous: Symbolizer | None = None) -> Symbolizer:
        from symbolizer import Symbolizer
        from symbolizer.debuginfod import Debuginfod, urls_from_env

        # Parsed symbol tables and kernel symbols persist by build id / boot id across runs.
        # DEBUGINFOD_URLS: missing debug files are fetched by build-id on a background thread.
        urls = urls_from_env()
        debuginfod = Debuginfod(urls, str(host.default_cache_dir() / "debuginfod")) if urls else None
        return Symbolizer(cache_dir=str(host.default_cache_dir() / "symbols"), debuginfod=debuginfod,
                          kernel_from=previous)

    def symbolize_user(self, pid: int, mappings: Sequence[Mapping], addrs: Sequence[int]) -> list[Symbolized]:
        return self._inner.symbolize_user(pid, mappings, addrs)

    def symbolize_kernel(self, addrs: Sequence[int]) -> list[Symbolized]:
        return self._inner.symbolize_kernel(addrs)

    def forget_unused(self) -> None:
        self._inner.forget_unused()

    def release_when_idle(self) -> None:
        self._inner.release_when_idle()

    def pin(self, info: ProcessInfo) -> None:
        self._inner.pin_process(info.pid, info.mappings)

    def shed(self) -> None:
        self._inner.close()
        self._inner = self._make(self._inner)
        self.sheds += 1


def require_privileges() -> None:
    missing = preflight.missing_required_caps(preflight.effective_caps())
    if missing:
        raise EnvironmentProblem(
            f"not permitted to load BPF (missing {', '.join(missing)}): run as root (prefix sudo) "
            f"or grant {', '.join(preflight.REQUIRED_CAPS)}"
        )


@contextmanager
def profiling_session(frequency_hz: int, pids: tuple[int, ...] = (),
                      on_snapshot: Callable[[ProcessInfo], None] | None = None) -> Iterator[tuple[Session, FdSampler]]:
    """Load the sampler and build the session; the sampler is closed on the way out.
    ``on_snapshot`` sees each process when the registry first snapshots it."""
    require_privileges()
    started = time.monotonic()
    sampler = FdSampler(LoadOptions(frequency_hz=frequency_hz, pids=pids))
    log.debug("BPF program loaded in %.2f s", time.monotonic() - started)
    symbolizer = SheddableSymbolizer()

    def pin(info: ProcessInfo) -> None:
        symbolizer.pin(info)
        if on_snapshot is not None:
            on_snapshot(info)

    def shed() -> None:  # the profile builder's cache holds the symbolizer's objects
        symbolizer.shed()
        pprof.shed_cache()

    session = Session(sampler, symbolizer, SessionSettings(frequency_hz=frequency_hz), pin=pin, shed=shed)
    try:
        yield session, sampler
    finally:
        sampler.close()

