"""``hostflame run``: the continuous loop. Each interval becomes one Profile handed to every
exporter; SIGTERM or SIGINT flushes the partial interval and exits 0.

In: a validated ``RunConfig``. Out: profiles through the ``Exporter`` interface, one
summary line per interval in the log. The agent runs niced, and a resource governor
(agent/governor.py) keeps its CPU and memory inside the configured budgets: when it lowers
the frequency the interval is cut first, so every profile has one sampling period.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
import signal
import time
from types import FrameType

from agent.config import RunConfig
from agent.errors import EXIT_OK, EnvironmentProblem
from agent.exporters import Exporter
from agent.fd_sampler import FdSampler
from agent.governor import Budgets, Decision, Governor
from agent.model import Profile
from agent.session import Session
from agent.wiring import profiling_session

log = logging.getLogger(__name__)

NICE = 10  # the host's work comes first: under contention the agent yields


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def _trim_heap() -> None:
    """Hand freed heap pages back to the kernel (glibc malloc_trim; a no-op elsewhere): what
    an interval's profile building and a new binary's symbol table freed stops counting as
    resident. About a millisecond."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _release_memory() -> None:
    gc.collect()
    _trim_heap()


class _Loop:
    """State of one run: the session, its sampler, the exporters and the governor."""

    def __init__(self, config: RunConfig, session: Session, sampler: FdSampler, exporters: list[Exporter]):
        self.config = config
        self.session = session
        self.sampler = sampler
        self.exporters = exporters
        self.governor = Governor(Budgets(cpu_percent=config.cpu_budget_percent, memory_mb=config.memory_budget_mb,
                                         window_s=config.budget_window_s), config.frequency_hz)
        self.cpu_at_cut = _cpu_seconds()

    def telemetry(self) -> dict[str, int]:
        g = self.governor.stats
        return {"frequency_hz": g.frequency_hz, "governor_throttles": g.throttles,
                "governor_cache_sheds": g.cache_sheds, "governor_recoveries": g.recoveries,
                "bpf_map_bytes": self.sampler.map_memory_bytes()}

    def cut(self, ended: float | None = None) -> None:
        """Write the interval that ends now (drained up to now, so a late loop does not shift
        samples into the next interval), and log its summary line. ``ended``: sampling
        stopped then and everything was drained already."""
        if ended is None:
            self.session.drain()
        profile = self.session.take_profile(ended, self.telemetry())
        _export(self.exporters, profile)
        _trim_heap()
        cpu = _cpu_seconds()
        g = self.governor.stats
        log.info(
            "interval: %d samples in %.1f s, %d lost, %d processes tracked; agent cpu %.2f s, rss %.0f MB, "
            "bpf maps %.1f MB; %d Hz, governor throttles %d, cache sheds %d, recoveries %d",
            profile.total_samples, profile.duration_ns / 1e9, profile.counters.get("lost_counts_map_full", 0),
            self.session.registry.stats.tracked, cpu - self.cpu_at_cut, _rss_bytes() / 2**20,
            self.sampler.map_memory_bytes() / 2**20, profile.frequency_hz, g.throttles, g.cache_sheds, g.recoveries,
        )
        self.cpu_at_cut = cpu

    def govern(self, now: float) -> None:
        if not self.governor.due(now):
            return
        decision = self.governor.observe(now, _cpu_seconds(), _rss_bytes())
        if decision is not None:
            self.apply(decision)

    def apply(self, decision: Decision) -> None:
        if decision.frequency_hz != self.sampler.frequency_hz:
            self.cut()  # the samples so far keep the period they were taken with
            self.sampler.set_frequency(decision.frequency_hz)
            self.session.set_frequency(decision.frequency_hz)
        if decision.shed_caches:
            self.session.shed_caches()
            _release_memory()


def _export(exporters: list[Exporter], profile: Profile) -> None:
    for exporter in exporters:
        try:
            exporter.export(profile)
        except OSError as exc:  # a full disk must not stop sampling
            log.warning("%s could not write a profile: %s", type(exporter).__name__, exc)


def run(config: RunConfig) -> int:
    from agent.exporters.disk import DiskExporter

    try:
        config.export_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create --export-dir {config.export_dir}: {exc.strerror}") from exc
    exporters: list[Exporter] = [DiskExporter(config.export_dir)]
    stop_signal: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_signal.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        os.nice(NICE)
    except OSError:
        log.debug("could not lower the agent's priority")
    try:
        with profiling_session(config.frequency_hz) as (session, sampler):
            sampler.attach()
            session.start()
            log.info("profiling every CPU at %d Hz; a profile every %g s into %s",
                     config.frequency_hz, config.interval_s, config.export_dir)
            loop = _Loop(config, session, sampler, exporters)
            started = time.monotonic()
            loop.governor.start(started, _cpu_seconds())
            next_cut = started + config.interval_s
            while not stop_signal:
                now = time.monotonic()
                if config.duration_s and now - started >= config.duration_s:
                    break
                if now >= next_cut:
                    loop.cut()
                    next_cut += config.interval_s
                    if next_cut <= now:  # the loop was held up (a starved agent yields): no empty catch-up cuts
                        next_cut = now + config.interval_s
                loop.govern(now)
                session.tick(max(0.0, min(next_cut - time.monotonic(), 0.1)))
            ended = time.monotonic()
            sampler.detach()
            session.final_drain()
            loop.cut(ended)
            log.info("stopped%s; last (partial) interval written",
                     f" on {signal.Signals(stop_signal[0]).name}" if stop_signal else "")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for exporter in exporters:
            exporter.close()
    return EXIT_OK
