"""Command line: ``hostflame record | run | check``; the only place that wires every stage.

Exit status: 0 success, 1 runtime failure, 2 usage error (see agent/errors.py). Every
failure is one line on stderr, no traceback, and no partial output file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from agent.config import (
    DEFAULT_BUDGET_WINDOW_S,
    DEFAULT_CPU_BUDGET_PERCENT,
    DEFAULT_EXPORT_DIR,
    DEFAULT_FREQUENCY_HZ,
    DEFAULT_INTERVAL_S,
    DEFAULT_MEMORY_BUDGET_MB,
    RecordConfig,
    RunConfig,
)
from agent.errors import EXIT_OK, EXIT_RUNTIME, HostflameError, UsageError

log = logging.getLogger("hostflame")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hostflame", description="Whole-host eBPF CPU profiler.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rec = sub.add_parser("record", help="profile every CPU for a while and write profiles")
    rec.add_argument("--duration", type=_positive_float, default=10.0, metavar="S",
                     help="seconds to sample (default 10)")
    rec.add_argument("--frequency", type=int, default=DEFAULT_FREQUENCY_HZ, metavar="HZ",
                     help=f"samples per second per CPU, 1..10000 (default {DEFAULT_FREQUENCY_HZ})")
    rec.add_argument("--pid", type=int, action="append", default=[], metavar="PID",
                     help="only this process (repeatable); default: every process")
    rec.add_argument("-o", "--output", type=Path, action="append", default=[], metavar="PATH",
                     help="output file, format by extension: .pb.gz pprof, .folded, .html (repeatable)")
    rec.add_argument("--top", type=int, default=15, metavar="N",
                     help="print the N hottest functions (default 15, 0 for none)")

    run = sub.add_parser("run", help="profile continuously, one profile per interval")
    run.add_argument("--interval", type=_positive_float, default=DEFAULT_INTERVAL_S, metavar="S",
                     help=f"seconds per profile (default {DEFAULT_INTERVAL_S:g})")
    run.add_argument("--frequency", type=int, default=DEFAULT_FREQUENCY_HZ, metavar="HZ",
                     help=f"samples per second per CPU (default {DEFAULT_FREQUENCY_HZ})")
    run.add_argument("--export-dir", type=Path, default=DEFAULT_EXPORT_DIR, metavar="DIR",
                     help=f"where pprof files go (default {DEFAULT_EXPORT_DIR})")
    run.add_argument("--duration", type=_positive_float, default=0.0, metavar="S",
                     help="stop after S seconds (default: run until SIGTERM or SIGINT)")
    run.add_argument("--cpu-budget", type=_positive_float, default=DEFAULT_CPU_BUDGET_PERCENT, metavar="PCT",
                     help="agent CPU budget, %% of one CPU (default %(default)g; 0: none); over it the "
                          "sampling frequency is lowered, then caches are shed")
    run.add_argument("--memory-budget", type=_positive_float, default=DEFAULT_MEMORY_BUDGET_MB, metavar="MB",
                     help="agent resident memory budget in MB (default %(default)g; 0: none)")
    run.add_argument("--budget-window", type=_positive_float, default=DEFAULT_BUDGET_WINDOW_S, metavar="S",
                     help="seconds over which the budgets are judged (default %(default)g)")

    sub.add_parser("check", help="preflight: can this host run hostflame?")
    return parser


def _record(args: argparse.Namespace) -> int:
    config = RecordConfig(duration_s=args.duration, outputs=tuple(args.output), frequency_hz=args.frequency,
                          pids=tuple(args.pid), top=args.top)
    config.validate()
    from agent.recorder import record

    return record(config)


def _run(args: argparse.Namespace) -> int:
    config = RunConfig(interval_s=args.interval, frequency_hz=args.frequency, export_dir=args.export_dir,
                       duration_s=args.duration, cpu_budget_percent=args.cpu_budget,
                       memory_budget_mb=args.memory_budget, budget_window_s=args.budget_window)
    config.validate()
    from agent.daemon import run

    return run(config)


def _check(_args: argparse.Namespace) -> int:
    from agent.preflight import run_checks

    results = run_checks()
    for result in results:
        print(result.line())
    return EXIT_OK if all(r.ok for r in results) else EXIT_RUNTIME


COMMANDS = {"record": _record, "run": _run, "check": _check}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="hostflame: %(levelname)s: %(message)s" if sys.stderr.isatty() else
            "%(asctime)s hostflame %(levelname)s %(name)s: %(message)s",
        )
        return COMMANDS[args.command](args)
    except HostflameError as exc:
        print(f"hostflame: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
