"""The resource governor's ladder: lower the frequency, then shed caches, recover when calm.
Expected values follow from the budgets given (halving from 99 Hz: 49, 24, 12, floor 11)."""

from __future__ import annotations

import logging

import pytest

from agent.governor import Budgets, Decision, Governor

MB = 2**20


def window(g: Governor, t: float, cpu_s: float, rss_mb: float = 10) -> Decision | None:
    assert g.due(t)
    return g.observe(t, cpu_s, int(rss_mb * MB))


def started(budgets: Budgets, frequency_hz: int = 99) -> Governor:
    g = Governor(budgets, frequency_hz)
    g.start(0.0, 0.0)
    assert window(g, 10.0, 5.0) is None  # GIVEN the warm-up window, whatever it cost, is not judged
    return g


def test_cpu_over_budget_lowers_frequency_and_never_sheds(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a 1 % CPU budget over 10 s windows
    g = started(Budgets(cpu_percent=1.0, memory_mb=0, window_s=10))
    # WHEN a window costs 0.3 s of CPU (3 %)
    with caplog.at_level(logging.WARNING):
        first = window(g, 20.0, 5.3)
        # AND the next one is still over
        second = window(g, 30.0, 5.6)
    # THEN the frequency halves each time; caches stay (rebuilding them would cost CPU)
    assert first == Decision(49, shed_caches=False)
    assert second == Decision(24, shed_caches=False)
    # AND it was logged once, and counted
    assert len([r for r in caplog.records if "resource governor" in r.message]) == 1
    stats = g.stats
    assert (stats.throttles, stats.cache_sheds, stats.frequency_hz) == (2, 0, 24)
    assert stats.last_cpu_percent == pytest.approx(3.0)


def test_frequency_never_goes_below_the_floor() -> None:
    g = started(Budgets(cpu_percent=1.0, memory_mb=0, window_s=10, min_frequency_hz=11))
    cpu = 5.0
    decisions = []
    for i in range(6):
        cpu += 1.0
        decisions.append(window(g, 20.0 + 10 * i, cpu))
    assert [d.frequency_hz for d in decisions if d] == [49, 24, 12, 11, 11, 11]
    assert g.stats.throttles == 4  # at the floor a window over budget only sheds caches


def test_memory_over_budget_lowers_frequency_then_sheds_caches() -> None:
    g = started(Budgets(cpu_percent=1.0, memory_mb=60, window_s=10))
    # WHEN memory is over while CPU is fine: first the frequency, then also the caches
    assert window(g, 20.0, 5.0, rss_mb=80) == Decision(49, shed_caches=False)
    assert window(g, 30.0, 5.0, rss_mb=70) == Decision(24, shed_caches=True)
    assert g.stats.cache_sheds == 1


def test_recovers_after_calm_windows_up_to_the_configured_frequency() -> None:
    g = started(Budgets(cpu_percent=1.0, memory_mb=0, window_s=10, recover_windows=2))
    assert window(g, 20.0, 5.5) == Decision(49)
    # WHEN usage stays under half the budget (0.02 s per 10 s = 0.2 %)
    results = [window(g, 30.0 + 10 * i, 5.5 + 0.02 * (i + 1)) for i in range(6)]
    # THEN the frequency doubles back after every two calm windows, capped at 99 Hz
    assert [r.frequency_hz for r in results if r] == [98, 99]
    assert g.stats.recoveries == 2


def test_no_budget_means_no_decision() -> None:
    g = started(Budgets(cpu_percent=0, memory_mb=0, window_s=10))
    assert window(g, 20.0, 9.0, rss_mb=10_000) is None
