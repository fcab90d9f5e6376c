"""Telemetry: the agent's own counters, a Prometheus ``/metrics`` endpoint, one log line per interval.

Stage: beside the pipeline (reads what the daemon hands it, never reaches into a stage).
In: each interval's ``Profile``, target counts and the exporters' ``DeliveryStats``.
Out: metrics through ``prometheus_client`` (imported only when an address is given or
``registry`` is asked for: with the TLS it pulls in, ~7 MB resident an agent without metrics
does not pay) and ``summary_line``. Metric names (all prefixed ``hostflame_``): ``samples_total``,
``samples_lost_total{cause}``, ``processes``, ``targets``, ``frames_total``,
``frames_unnamed_total``, ``profiles_produced_total{exporter}``, ``profiles_sent_total{exporter}``,
``profiles_dropped_total{exporter,cause}``, ``retries_total{exporter}``,
``queue_bytes{exporter}``, ``agent_cpu_seconds_total``, ``agent_rss_bytes``.
"""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from agent.delivery import DROP_CAUSES, DeliveryStats
from agent.model import Profile

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["Telemetry", "agent_cpu_seconds", "agent_rss_bytes"]

LOST_CAUSES = ("lost_counts_map_full", "kernel_stack_collision", "kernel_stack_map_full", "user_stack_collision",
               "user_stack_map_full", "user_stack_missing", "process_events_lost", "pids_map_full")


def agent_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def agent_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


@dataclass
class _Totals:
    samples: int = 0
    lost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOST_CAUSES, 0))
    processes: int = 0
    targets: int = 0
    frames: int = 0
    frames_unnamed: int = 0
    local: dict[str, int] = field(default_factory=dict)  # exporter -> profiles written synchronously (disk)
    dropped_by_rules: int = 0


class Telemetry:
    """Counters since start; ``delivery`` gives each network exporter's current stats."""

    def __init__(self, delivery: Callable[[], Mapping[str, DeliveryStats]]) -> None:
        self._delivery = delivery
        self._lock = threading.Lock()
        self.totals = _Totals()

    @cached_property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry of these counters, made (and prometheus_client imported) on first use."""
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        registry.register(_MetricsCollector(self))
        return registry

    def serve(self, host: str, port: int) -> None:
        """Start the ``/metrics`` endpoint in a daemon thread."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)

    def record_interval(self, profile: Profile, processes: int, targets: int, dropped_by_rules: int,
                        written: Mapping[str, int]) -> None:
        frames = unnamed = 0
        for sample in profile.samples:
            frames += len(sample.stack) * sample.count
            unnamed += sum(1 for s in sample.stack if not s.named) * sample.count
        with self._lock:
            t = self.totals
            t.samples += profile.total_samples
            for cause in LOST_CAUSES:
                t.lost[cause] += profile.counters.get(cause, 0)
            t.processes = processes
            t.targets = targets
            t.frames += frames
            t.frames_unnamed += unnamed
            t.dropped_by_rules += dropped_by_rules
            for name, n in written.items():
                t.local[name] = t.local.get(name, 0) + n

    def summary_line(self, profile: Profile, targets: int, cpu_s: float) -> str:
        parts = [f"interval: {profile.total_samples} samples in {profile.duration_ns / 1e9:.1f} s, "
                 f"{sum(profile.counters.get(c, 0) for c in LOST_CAUSES)} lost, {targets} targets, "
                 f"{self.totals.processes} processes"]
        for name, stats in sorted(self._delivery().items()):
            dropped = sum(stats.dropped.values())
            parts.append(f"{name} sent {stats.sent}/{stats.produced} dropped {dropped} "
                         f"queued {stats.queued + stats.in_flight} ({stats.queue_bytes / 2**20:.1f} MiB)")
        parts.append(f"agent cpu {cpu_s:.2f} s, rss {agent_rss_bytes() / 2**20:.0f} MB")
        return "; ".join(parts)


class _MetricsCollector:
    """A prometheus_client collector (the registry only calls ``collect``; not a subclass of
    its ``Collector``, so that this module loads without the library)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self.t._lock:
            totals = _Totals(self.t.totals.samples, dict(self.t.totals.lost), self.t.totals.processes,
                             self.t.totals.targets, self.t.totals.frames, self.t.totals.frames_unnamed,
                             dict(self.t.totals.local), self.t.totals.dropped_by_rules)
        yield CounterMetricFamily("hostflame_samples", "CPU samples attributed to a stack", value=totals.samples)
        lost = CounterMetricFamily("hostflame_samples_lost", "samples or stacks lost in the kernel", labels=["cause"])
        for cause, n in totals.lost.items():
            lost.add_metric([cause], n)
        yield lost
        yield GaugeMetricFamily("hostflame_processes", "processes tracked", value=totals.processes)
        yield GaugeMetricFamily("hostflame_targets", "targets in the last interval", value=totals.targets)
        yield CounterMetricFamily("hostflame_frames", "frames in samples (sample-weighted)", value=totals.frames)
        yield CounterMetricFamily("hostflame_frames_unnamed", "frames without a function name (sample-weighted)",
                                  value=totals.frames_unnamed)
        produced = CounterMetricFamily("hostflame_profiles_produced", "profiles handed to an exporter",
                                       labels=["exporter"])
        sent = CounterMetricFamily("hostflame_profiles_sent", "profiles delivered", labels=["exporter"])
        dropped = CounterMetricFamily("hostflame_profiles_dropped", "profiles given up, by cause",
                                      labels=["exporter", "cause"])
        retries = CounterMetricFamily("hostflame_retries", "request retries", labels=["exporter"])
        queue = GaugeMetricFamily("hostflame_queue_bytes", "bytes waiting in the delivery queue", labels=["exporter"])
        for name, n in totals.local.items():
            produced.add_metric([name], n)
            sent.add_metric([name], n)
        dropped.add_metric(["all", "relabel"], totals.dropped_by_rules)
        for name, stats in self.t._delivery().items():
            produced.add_metric([name], stats.produced)
            sent.add_metric([name], stats.sent)
            for cause in DROP_CAUSES:
                dropped.add_metric([name, cause], stats.dropped.get(cause, 0))
            retries.add_metric([name], stats.retries)
            queue.add_metric([name], stats.queue_bytes)
        yield from (produced, sent, dropped, retries, queue)
        yield CounterMetricFamily("hostflame_agent_cpu_seconds", "agent CPU time (user+system)",
                                  value=agent_cpu_seconds())
        yield GaugeMetricFamily("hostflame_agent_rss_bytes", "agent resident memory", value=agent_rss_bytes())
