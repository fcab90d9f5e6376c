"""Command line: ``hostflame record | run | check | view | diff | doctor | symbolize``; the only place that
wires every stage.

Exit status: 0 success, 1 runtime failure, 2 usage error (see agent/errors.py). Every
failure is one line on stderr, no traceback, and no partial output file.
"""

from __future__ import annotations

import argparse
import logging
import os
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
    check_frequency,
    check_pids,
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

    run = sub.add_parser("run", help="profile continuously, one profile per target per interval",
                         description="Settings: defaults < --config FILE (TOML) < HOSTFLAME_* environment < flags.")
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="TOML settings file (see packaging/hostflame.example.toml)")
    run.add_argument("--interval", type=_positive_float, default=None, metavar="S",
                     help=f"seconds per profile (default {DEFAULT_INTERVAL_S:g})")
    run.add_argument("--frequency", type=int, default=None, metavar="HZ",
                     help=f"samples per second per CPU (default {DEFAULT_FREQUENCY_HZ})")
    run.add_argument("--export-dir", type=Path, default=None, metavar="DIR",
                     help=f"write pprof files here (default {DEFAULT_EXPORT_DIR} when no other exporter is set)")
    run.add_argument("--pyroscope-url", default=None, metavar="URL", help="push profiles to this Pyroscope server")
    run.add_argument("--otlp-url", default=None, metavar="URL", help="send OTLP profiles to this endpoint")
    run.add_argument("--label", action="append", default=[], metavar="K=V",
                     help="static label on every target (repeatable)")
    run.add_argument("--metrics-addr", default=None, metavar="HOST:PORT",
                     help="serve Prometheus /metrics here (default: off)")
    run.add_argument("--duration", type=_positive_float, default=None, metavar="S",
                     help="stop after S seconds (default: run until SIGTERM or SIGINT)")
    run.add_argument("--cpu-budget", type=_positive_float, default=None, metavar="PCT",
                     help=f"agent CPU budget, %% of one CPU (default {DEFAULT_CPU_BUDGET_PERCENT:g}; 0: none); "
                          "over it the sampling frequency is lowered, then caches are shed")
    run.add_argument("--memory-budget", type=_positive_float, default=None, metavar="MB",
                     help=f"agent resident memory budget in MB (default {DEFAULT_MEMORY_BUDGET_MB:g}; 0: none)")
    run.add_argument("--budget-window", type=_positive_float, default=None, metavar="S",
                     help=f"seconds over which the budgets are judged (default {DEFAULT_BUDGET_WINDOW_S:g})")

    sub.add_parser("check", help="preflight: can this host run hostflame?")

    view = sub.add_parser("view", help="turn a pprof file (any producer) into a flame graph page and more")
    view.add_argument("profile", type=Path, metavar="PROFILE", help="pprof file, gzip-compressed or not")
    view.add_argument("-o", "--output", type=Path, action="append", default=[], metavar="PATH", required=True,
                      help="output file, format by extension: .html, .speedscope.json, .folded (repeatable)")

    diff = sub.add_parser("diff", help="differential flame graph of NEW against BASE (shares of each total)")
    diff.add_argument("base", type=Path, metavar="BASE", help="the pprof file to compare against")
    diff.add_argument("new", type=Path, metavar="NEW", help="the pprof file compared")
    diff.add_argument("-o", "--output", type=Path, action="append", default=[], metavar="PATH", required=True,
                      help="output file: .html (repeatable)")

    doc = sub.add_parser("doctor", help="sample, then say per binary how well frames are named and why not")
    doc.add_argument("--duration", type=_positive_float, default=5.0, metavar="S",
                     help="seconds to sample (default 5)")
    doc.add_argument("--pid", type=int, action="append", default=[], metavar="PID",
                     help="only this process (repeatable); default: every process")
    doc.add_argument("--frequency", type=int, default=DEFAULT_FREQUENCY_HZ, metavar="HZ",
                     help=f"samples per second per CPU (default {DEFAULT_FREQUENCY_HZ})")

    sym = sub.add_parser("symbolize", help="name ELF addresses from stdin, in addr2line -a -f -i -C's layout")
    sym.add_argument("-e", "--exe", required=True, metavar="FILE", help="the ELF file the addresses belong to")
    sym.add_argument("-a", "--addresses", action="store_true", help="print each address first")
    sym.add_argument("-f", "--functions", action="store_true", help="print function names")
    sym.add_argument("-i", "--inlines", action="store_true", help="print inlined callers too")
    sym.add_argument("--cache-dir", metavar="DIR", default=None,
                     help="persistent symbol cache (default: none, every run parses DWARF)")
    return parser


def _record(args: argparse.Namespace) -> int:
    config = RecordConfig(duration_s=args.duration, outputs=tuple(args.output), frequency_hz=args.frequency,
                          pids=tuple(args.pid), top=args.top)
    config.validate()
    from agent.recorder import record

    return record(config)


def _run(args: argparse.Namespace) -> int:
    from agent.settings import load_run_config

    config = load_run_config(args.config, os.environ, vars(args))
    config.validate()
    from agent.daemon import run

    return run(config)


def _check(_args: argparse.Namespace) -> int:
    from agent.preflight import run_checks

    results = run_checks()
    for result in results:
        print(result.line())
    return EXIT_OK if all(r.ok for r in results) else EXIT_RUNTIME


def _view(args: argparse.Namespace) -> int:
    from agent.view.commands import view

    return view(args.profile, args.output)


def _diff(args: argparse.Namespace) -> int:
    from agent.view.commands import diff

    return diff(args.base, args.new, args.output)


def _doctor(args: argparse.Namespace) -> int:
    if not args.duration > 0:
        raise UsageError(f"--duration must be more than 0 seconds, got {args.duration:g}")
    check_frequency(args.frequency)
    check_pids(tuple(args.pid))
    from agent.doctor import doctor

    return doctor(args.duration, args.frequency, tuple(args.pid))


def _symbolize(args: argparse.Namespace) -> int:
    from agent.symbolize_cmd import run_symbolize

    return run_symbolize(args.exe, addresses=args.addresses, functions=args.functions, inlines=args.inlines,
                         cache_dir=args.cache_dir)


COMMANDS = {"record": _record, "run": _run, "check": _check, "view": _view, "diff": _diff,
            "symbolize": _symbolize, "doctor": _doctor}


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
