"""``hostflame run``: the continuous loop. Each interval becomes one Profile handed to every
exporter; SIGTERM or SIGINT flushes the partial interval and exits 0.

In: a validated ``RunConfig``. Out: profiles through the ``Exporter`` interface, one
summary line per interval in the log.
"""

from __future__ import annotations

import logging
import resource
import signal
import time
from types import FrameType

from agent.config import RunConfig
from agent.errors import EXIT_OK, EnvironmentProblem
from agent.exporters import Exporter
from agent.model import Profile
from agent.wiring import profiling_session

log = logging.getLogger(__name__)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


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
        with profiling_session(config.frequency_hz) as (session, sampler):
            sampler.attach()
            session.start()
            log.info("profiling every CPU at %d Hz; a profile every %g s into %s",
                     config.frequency_hz, config.interval_s, config.export_dir)
            started = time.monotonic()
            next_cut = started + config.interval_s
            cpu_at_cut = _cpu_seconds()
            while not stop_signal:
                now = time.monotonic()
                if config.duration_s and now - started >= config.duration_s:
                    break
                if now >= next_cut:
                    profile = session.take_profile()
                    _export(exporters, profile)
                    cpu = _cpu_seconds()
                    log.info(
                        "interval: %d samples, %d lost, %d processes tracked; agent cpu %.2f s, rss %.0f MB",
                        profile.total_samples, profile.counters.get("lost_counts_map_full", 0),
                        session.registry.stats.tracked, cpu - cpu_at_cut, _rss_mb(),
                    )
                    cpu_at_cut = cpu
                    next_cut += config.interval_s
                session.tick(max(0.0, min(next_cut - time.monotonic(), 0.1)))
            ended = time.monotonic()
            sampler.detach()
            session.final_drain()
            _export(exporters, session.take_profile(ended))
            log.info("stopped%s; last (partial) interval written",
                     f" on {signal.Signals(stop_signal[0]).name}" if stop_signal else "")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for exporter in exporters:
            exporter.close()
    return EXIT_OK
