"""Resource governor: keep the agent inside hard budgets for its own CPU and memory.

In: one observation per window (the agent's CPU seconds and resident bytes, from the
daemon). Out: a ``Decision``: the sampling frequency to use and whether to shed caches.
Order when a budget is crossed: lower the frequency first (halving, down to
``min_frequency_hz``); if memory is still over in the next window (or the floor is reached),
shed caches too (shedding helps memory but costs CPU to rebuild, so never for CPU alone).
When usage stays under half of every budget for ``recover_windows`` windows, the frequency
doubles back, up to the configured one. The first throttle is logged once as a
warning; every step is counted in ``stats`` for telemetry and the summary line.
Pure logic, no clock and no I/O: the daemon measures and applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

RECOVER_BELOW = 0.5  # a window uses less than this share of every budget: recovery counts up


@dataclass(frozen=True)
class Budgets:
    """Hard budgets; 0 disables one. ``cpu_percent`` is % of one CPU over a window."""

    cpu_percent: float = 1.0
    memory_mb: float = 100.0
    window_s: float = 30.0
    min_frequency_hz: int = 11
    recover_windows: int = 3


@dataclass(frozen=True)
class Decision:
    frequency_hz: int
    shed_caches: bool = False


@dataclass(frozen=True)
class GovernorStats:
    throttles: int  # frequency lowered
    cache_sheds: int
    recoveries: int  # frequency raised back
    frequency_hz: int  # the frequency in use now
    last_cpu_percent: float
    last_rss_mb: float


class Governor:
    def __init__(self, budgets: Budgets, frequency_hz: int) -> None:
        self.budgets = budgets
        self._configured = frequency_hz
        self._frequency = frequency_hz
        self._last: tuple[float, float] | None = None  # (time_s, cpu_s) at the window start
        self._warming_up = False
        self._over_before = False
        self._calm_windows = 0
        self._warned = False
        self._throttles = self._sheds = self._recoveries = 0
        self._cpu_percent = 0.0
        self._rss_mb = 0.0

    def start(self, now_s: float, cpu_s: float) -> None:
        """Sampling starts now. The first window is warm-up (kernel symbols, the first
        binaries' symbol tables) and is not judged; budgets apply from the second on."""
        self._last = (now_s, cpu_s)
        self._warming_up = True

    def due(self, now_s: float) -> bool:
        return self._last is not None and now_s - self._last[0] >= self.budgets.window_s

    def observe(self, now_s: float, cpu_s: float, rss_bytes: int) -> Decision | None:
        """Judge the window that ends now; None when nothing is to change."""
        if self._last is None:
            self.start(now_s, cpu_s)
            return None
        t0, c0 = self._last
        self._last = (now_s, cpu_s)
        if now_s <= t0 or self._warming_up:
            self._warming_up = False
            return None
        self._cpu_percent = 100.0 * (cpu_s - c0) / (now_s - t0)
        self._rss_mb = rss_bytes / 2**20
        b = self.budgets
        cpu_share = self._cpu_percent / b.cpu_percent if b.cpu_percent > 0 else 0.0
        mem_share = self._rss_mb / b.memory_mb if b.memory_mb > 0 else 0.0
        if max(cpu_share, mem_share) > 1.0:
            return self._throttle(cpu_share, mem_share)
        self._over_before = False
        if max(cpu_share, mem_share) < RECOVER_BELOW and self._frequency < self._configured:
            self._calm_windows += 1
            if self._calm_windows >= b.recover_windows:
                self._calm_windows = 0
                self._frequency = min(self._configured, self._frequency * 2)
                self._recoveries += 1
                log.info("resource governor: usage back under budget, sampling at %d Hz", self._frequency)
                return Decision(self._frequency)
        else:
            self._calm_windows = 0
        return None

    def _throttle(self, cpu_share: float, mem_share: float) -> Decision:
        self._calm_windows = 0
        b = self.budgets
        lowered = max(b.min_frequency_hz, self._frequency // 2)
        # Shedding frees memory but costs CPU to rebuild: only for the memory budget, and only
        # once a lower frequency has had a window to help.
        shed = mem_share > 1.0 and (self._over_before or lowered == self._frequency)
        self._over_before = True
        if lowered != self._frequency:
            self._throttles += 1
        if shed:
            self._sheds += 1
        self._frequency = lowered
        what = (f"agent CPU {self._cpu_percent:.2f} % of one CPU (budget {b.cpu_percent:g} %)" if cpu_share > 1.0
                else f"agent memory {self._rss_mb:.0f} MB (budget {b.memory_mb:g} MB)")
        message = (f"resource governor: {what}: sampling at {lowered} Hz instead of {self._configured} Hz"
                   f"{' and shedding caches' if shed else ''}; raise --cpu-budget/--memory-budget to allow more")
        if self._warned:
            log.debug(message)
        else:
            self._warned = True
            log.warning(message + " (logged once)")
        return Decision(lowered, shed_caches=shed)

    @property
    def frequency_hz(self) -> int:
        return self._frequency

    @property
    def stats(self) -> GovernorStats:
        return GovernorStats(self._throttles, self._sheds, self._recoveries, self._frequency,
                             self._cpu_percent, self._rss_mb)
