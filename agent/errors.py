"""Errors that end a hostflame command, each with its documented exit status.

Exit statuses (README, "Exit status"): 0 success, 1 runtime failure (BPF not permitted,
kernel not suitable, I/O), 2 usage error (bad flag or value; nothing was started).
Per-process failures during profiling are never raised as these: they are counted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class HostflameError(Exception):
    """A failure reported as one line on stderr; ``exit_code`` is the process exit status."""

    exit_code = EXIT_RUNTIME


class UsageError(HostflameError):
    """The command line or configuration is wrong; nothing has been started or written."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(HostflameError):
    """The host cannot run the profiler as it is (permissions, kernel, headers, tracefs)."""


class BpfLoadError(EnvironmentProblem):
    """The BPF program could not be compiled, loaded or attached."""
