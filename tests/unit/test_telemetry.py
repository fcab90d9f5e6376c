"""Telemetry: the metrics text a Prometheus scrape gets, and the per-interval summary line."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from agent.delivery import DeliveryStats
from agent.telemetry import Telemetry
from tests.profile_factory import APP, make_profile, sample, sym

NAMED = sym(APP.start + 0x10, APP, "main")
UNNAMED = sym(APP.start + 0x20, APP, "server+0x20", named=False)


def test_metrics_and_summary_line() -> None:
    stats = DeliveryStats(produced=10, sent=6, dropped={"queue_full": 1, "rejected": 2, "expired": 0, "shutdown": 0},
                          queued=1, in_flight=0, queue_bytes=4096, retries=5, last_sent_mono=1.0)
    telemetry = Telemetry(lambda: {"pyroscope": stats})
    profile = make_profile(sample(UNNAMED, NAMED, count=3), counters={"lost_counts_map_full": 2, "taken": 5})
    telemetry.record_interval(profile, processes=7, targets=1, dropped_by_rules=1, written={"disk": 1})
    text = generate_latest(telemetry.registry).decode()
    for line in [
        "hostflame_samples_total 3.0",
        'hostflame_samples_lost_total{cause="lost_counts_map_full"} 2.0',
        "hostflame_processes 7.0",
        "hostflame_targets 1.0",
        "hostflame_frames_total 6.0",
        "hostflame_frames_unnamed_total 3.0",
        'hostflame_profiles_produced_total{exporter="pyroscope"} 10.0',
        'hostflame_profiles_sent_total{exporter="pyroscope"} 6.0',
        'hostflame_profiles_sent_total{exporter="disk"} 1.0',
        'hostflame_profiles_dropped_total{cause="rejected",exporter="pyroscope"} 2.0',
        'hostflame_profiles_dropped_total{cause="relabel",exporter="all"} 1.0',
        'hostflame_retries_total{exporter="pyroscope"} 5.0',
        'hostflame_queue_bytes{exporter="pyroscope"} 4096.0',
    ]:
        assert line in text, line
    assert "hostflame_agent_cpu_seconds_total" in text and "hostflame_agent_rss_bytes" in text
    line = telemetry.summary_line(profile, targets=1, cpu_s=0.25)
    assert re.match(r"interval: 3 samples in [\d.]+ s, 2 lost, 1 targets, 7 processes; "
                    "pyroscope sent 6/10 dropped 3 queued 1", line)
    assert "agent cpu 0.25 s" in line
