"""Configuration: frozen settings for each command, validated before anything starts.

In: parsed command-line values. Out: ``RecordConfig`` / ``RunConfig``; ``validate`` raises
``UsageError`` naming the setting and the accepted range. (A TOML file and HOSTFLAME_*
environment layer in below the flags when the continuous-mode issue lands.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError

MIN_FREQUENCY_HZ = 1
MAX_FREQUENCY_HZ = 10_000
DEFAULT_FREQUENCY_HZ = 99
DEFAULT_INTERVAL_S = 15.0
DEFAULT_EXPORT_DIR = Path("/var/lib/hostflame/profiles")
DEFAULT_CPU_BUDGET_PERCENT = 1.0  # of one CPU, over a budget window
DEFAULT_MEMORY_BUDGET_MB = 100.0  # resident set of the agent
DEFAULT_BUDGET_WINDOW_S = 30.0


def check_frequency(frequency_hz: int) -> None:
    if not MIN_FREQUENCY_HZ <= frequency_hz <= MAX_FREQUENCY_HZ:
        raise UsageError(
            f"--frequency must be between {MIN_FREQUENCY_HZ} and {MAX_FREQUENCY_HZ} Hz, got {frequency_hz}"
        )


def check_pids(pids: tuple[int, ...], proc_root: Path = Path("/proc")) -> None:
    for pid in pids:
        if pid <= 0 or not (proc_root / str(pid)).is_dir():
            raise UsageError(f"--pid {pid}: no such process")


@dataclass(frozen=True)
class RecordConfig:
    duration_s: float
    outputs: tuple[Path, ...]
    frequency_hz: int = DEFAULT_FREQUENCY_HZ
    pids: tuple[int, ...] = ()
    top: int = 15

    def validate(self) -> None:
        if not self.duration_s > 0:
            raise UsageError(f"--duration must be more than 0 seconds, got {self.duration_s:g}")
        check_frequency(self.frequency_hz)
        check_pids(self.pids)
        if not self.outputs:
            raise UsageError("no output: give at least one -o PATH (.pb.gz, .folded or .html)")
        if self.top < 0:
            raise UsageError(f"--top must be 0 or more, got {self.top}")
        from agent.exporters.files import check_outputs

        check_outputs(self.outputs)


@dataclass(frozen=True)
class RunConfig:
    interval_s: float = DEFAULT_INTERVAL_S
    frequency_hz: int = DEFAULT_FREQUENCY_HZ
    export_dir: Path = DEFAULT_EXPORT_DIR
    duration_s: float = 0.0  # 0: until SIGTERM/SIGINT
    cpu_budget_percent: float = DEFAULT_CPU_BUDGET_PERCENT  # 0: no CPU budget
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB  # 0: no memory budget
    budget_window_s: float = DEFAULT_BUDGET_WINDOW_S

    def validate(self) -> None:
        if self.cpu_budget_percent < 0 or self.memory_budget_mb < 0:
            raise UsageError("--cpu-budget and --memory-budget must be 0 (no budget) or more")
        if not self.budget_window_s >= 1:
            raise UsageError(f"--budget-window must be at least 1 second, got {self.budget_window_s:g}")
        if not self.interval_s >= 1:
            raise UsageError(f"--interval must be at least 1 second, got {self.interval_s:g}")
        if self.duration_s < 0:
            raise UsageError(f"--duration must be 0 (no limit) or more, got {self.duration_s:g}")
        check_frequency(self.frequency_hz)
        if self.export_dir.exists() and not self.export_dir.is_dir():
            raise UsageError(f"--export-dir {self.export_dir} is not a directory")
        existing = self.export_dir  # created (with parents) at start when missing
        try:
            while not existing.exists():
                existing = existing.parent
        except OSError as exc:
            raise UsageError(f"--export-dir {self.export_dir}: cannot reach {existing}: {exc.strerror}") from None
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"--export-dir {self.export_dir}: {existing} is not writable")
