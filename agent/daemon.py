"""``hostflame run``: the continuous loop. Each interval becomes one Profile, split into one
labelled profile per target and handed to every exporter (disk, Pyroscope, OTLP). SIGTERM or
SIGINT stops sampling, builds the partial interval, gives the senders at most
``shutdown_grace_s`` to deliver, and exits 0.

In: a validated ``RunConfig``. Out: profiles through ``agent.pipeline``; one summary line per
interval in the log; a Prometheus endpoint when ``metrics_addr`` is set.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from agent.config import RunConfig, parse_addr
from agent.errors import EXIT_OK, EnvironmentProblem
from agent.pipeline import Pipeline
from agent.telemetry import agent_cpu_seconds
from agent.wiring import profiling_session

log = logging.getLogger(__name__)


def _describe(config: RunConfig) -> str:
    where = []
    if config.export_dir is not None:
        where.append(f"into {config.export_dir}")
    if config.pyroscope is not None:
        where.append(f"to Pyroscope {config.pyroscope.url} ({config.pyroscope.api})")
    if config.otlp is not None:
        where.append(f"to OTLP {config.otlp.url}")
    return ", ".join(where)


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
    closed = False
    try:
        with profiling_session(config.frequency_hz, on_snapshot=pipeline.observe) as (session, sampler):
            sampler.attach()
            session.start()
            log.info("profiling every CPU at %d Hz; a profile per target every %g s %s",
                     config.frequency_hz, config.interval_s, _describe(config))
            started = time.monotonic()
            next_cut = started + config.interval_s
            cpu_at_cut = agent_cpu_seconds()
            while not stop_signal:
                now = time.monotonic()
                if config.duration_s and now - started >= config.duration_s:
                    break
                if now >= next_cut:
                    profile = session.take_profile()
                    targets = pipeline.handle(profile, session.registry.stats.tracked)
                    cpu = agent_cpu_seconds()
                    log.info("%s", pipeline.telemetry.summary_line(profile, targets, cpu - cpu_at_cut))
                    cpu_at_cut = cpu
                    next_cut += config.interval_s
                session.tick(max(0.0, min(next_cut - time.monotonic(), 0.1)))
            ended = time.monotonic()
            sampler.detach()
            session.final_drain()
            profile = session.take_profile(ended)
            targets = pipeline.handle(profile, session.registry.stats.tracked)
            log.info("%s", pipeline.telemetry.summary_line(profile, targets, agent_cpu_seconds() - cpu_at_cut))
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
