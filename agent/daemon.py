"""``hostflame run``: the continuous loop. Each interval becomes one Profile, split into one
labelled profile per target and handed to every exporter (disk, Pyroscope, OTLP). SIGTERM or
SIGINT stops sampling, builds the partial interval, gives the senders at most
``shutdown_grace_s`` to deliver, and exits 0.

In: a validated ``RunConfig``. Out: profiles through ``agent.pipeline``; one summary line per
interval in the log; a Prometheus endpoint when ``metrics_addr`` is set. The agent runs
niced, and a resource governor (agent/governor.py) keeps its CPU and memory inside the
configured budgets: when it lowers the frequency the interval is cut first, so every profile
has one sampling period.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import time
from types import FrameType

from agent.config import RunConfig, parse_addr
from agent.errors import EXIT_OK, EnvironmentProblem
from agent.fd_sampler import FdSampler
from agent.governor import Budgets, Decision, Governor
from agent.pipeline import Pipeline
from agent.session import Session
from agent.telemetry import agent_cpu_seconds, agent_rss_bytes
from agent.wiring import profiling_session

log = logging.getLogger(__name__)

NICE = 10  # the host's work comes first: under contention the agent yields


def _trim_heap() -> None:
    """Hand freed heap pages back to the kernel (glibc malloc_trim; a no-op elsewhere): what
    an interval's profile building and a new binary's symbol table freed stops counting as
    resident. About a millisecond."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _describe(config: RunConfig) -> str:
    where = []
    if config.export_dir is not None:
        where.append(f"into {config.export_dir}")
    if config.pyroscope is not None:
        where.append(f"to Pyroscope {config.pyroscope.url} ({config.pyroscope.api})")
    if config.otlp is not None:
        where.append(f"to OTLP {config.otlp.url}")
    return ", ".join(where)


class _Loop:
    """State of one run: the session, its sampler, the pipeline and the governor."""

    def __init__(self, config: RunConfig, session: Session, sampler: FdSampler, pipeline: Pipeline):
        self.config = config
        self.session = session
        self.sampler = sampler
        self.pipeline = pipeline
        self.governor = Governor(Budgets(cpu_percent=config.cpu_budget_percent, memory_mb=config.memory_budget_mb,
                                         window_s=config.budget_window_s), config.frequency_hz)
        self.cpu_at_cut = agent_cpu_seconds()

    def telemetry(self) -> dict[str, int]:
        g = self.governor.stats
        return {"frequency_hz": g.frequency_hz, "governor_throttles": g.throttles,
                "governor_cache_sheds": g.cache_sheds, "governor_recoveries": g.recoveries,
                "bpf_map_bytes": self.sampler.map_memory_bytes()}

    def cut(self, ended: float | None = None) -> None:
        """Hand on the interval that ends now (drained up to now, so a late loop does not shift
        samples into the next interval), and log its summary line. ``ended``: sampling
        stopped then and everything was drained already."""
        if ended is None:
            self.session.drain()
        profile = self.session.take_profile(ended, self.telemetry())
        targets = self.pipeline.handle(profile, self.session.registry.stats.tracked)
        _trim_heap()
        cpu = agent_cpu_seconds()
        g = self.governor.stats
        log.info("%s; bpf maps %.1f MB; %d Hz, governor throttles %d, cache sheds %d, recoveries %d",
                 self.pipeline.telemetry.summary_line(profile, targets, cpu - self.cpu_at_cut),
                 self.sampler.map_memory_bytes() / 2**20, profile.frequency_hz,
                 g.throttles, g.cache_sheds, g.recoveries)
        self.cpu_at_cut = cpu

    def govern(self, now: float) -> None:
        if not self.governor.due(now):
            return
        decision = self.governor.observe(now, agent_cpu_seconds(), agent_rss_bytes())
        if decision is not None:
            self.apply(decision)

    def apply(self, decision: Decision) -> None:
        if decision.frequency_hz != self.sampler.frequency_hz:
            self.cut()  # the samples so far keep the period they were taken with
            self.sampler.set_frequency(decision.frequency_hz)
            self.session.set_frequency(decision.frequency_hz)
        if decision.shed_caches:
            self.session.shed_caches()
            gc.collect()
            _trim_heap()


def run(config: RunConfig) -> int:
    if config.export_dir is not None:
        try:
            config.export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot create --export-dir {config.export_dir}: {exc.strerror}") from exc
    pipeline = Pipeline.from_config(config)
    if config.metrics_addr:
        host, port = parse_addr(config.metrics_addr, config.name("metrics_addr"))
        try:
            pipeline.telemetry.serve(host, port)
        except OSError as exc:
            pipeline.close(0)
            raise EnvironmentProblem(f"cannot serve metrics on {config.metrics_addr}: {exc.strerror or exc}") from exc
    stop_signal: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_signal.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        os.nice(NICE)
    except OSError:
        log.debug("could not lower the agent's priority")
    closed = False
    try:
        with (profiling_session(config.frequency_hz, on_snapshot=pipeline.observe) as (session, sampler),
              sampler.signals_end_waits()):
            sampler.attach()
            session.start()
            log.info("profiling every CPU at %d Hz; a profile per target every %g s %s",
                     config.frequency_hz, config.interval_s, _describe(config))
            loop = _Loop(config, session, sampler, pipeline)
            started = time.monotonic()
            loop.governor.start(started, agent_cpu_seconds())
            next_cut = started + config.interval_s
            end = started + config.duration_s if config.duration_s else float("inf")
            while not stop_signal:
                now = time.monotonic()
                if now >= end:
                    break
                if now >= next_cut:
                    loop.cut()
                    next_cut += config.interval_s
                    if next_cut <= now:  # the loop was held up (a starved agent yields): no empty catch-up cuts
                        next_cut = now + config.interval_s
                loop.govern(now)
                session.tick(max(0.0, min(next_cut, end) - time.monotonic()))
            ended = time.monotonic()
            sampler.detach()
            session.final_drain()
            loop.cut(ended)
            final = pipeline.close(config.shutdown_grace_s)
            closed = True
            for name, stats in final.items():
                log.info("%s: %d of %d profiles sent, dropped %s", name, stats.sent, stats.produced,
                         {k: v for k, v in stats.dropped.items() if v} or "none")
            log.info("stopped%s; last (partial) interval exported",
                     f" on {signal.Signals(stop_signal[0]).name}" if stop_signal else "")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not closed:
            pipeline.close(0)
    return EXIT_OK
