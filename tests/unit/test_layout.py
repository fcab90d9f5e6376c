"""Rules of the design that code review alone would let slip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMPORTS_BCC = re.compile(r"^\s*(import bcc\b|from bcc\b)", re.M)


def python_files(*tops: str) -> list[Path]:
    return [p for top in tops for p in (REPO / top).rglob("*.py")]


def test_bcc_is_imported_by_exactly_one_module() -> None:
    importers = sorted(str(p.relative_to(REPO)) for p in python_files("agent", "symbolizer", "bpf")
                       if IMPORTS_BCC.search(p.read_text()))
    assert importers == ["agent/bpf_loader.py"]


def test_symbolizer_never_imports_the_agent() -> None:
    offenders = [str(p.relative_to(REPO)) for p in python_files("symbolizer")
                 if re.search(r"^\s*(import agent\b|from agent\b)", p.read_text(), re.M)]
    assert offenders == []


def test_the_daemon_loads_no_library_its_config_does_not_use() -> None:
    # GIVEN the modules `hostflame run` imports to start (disk export, no metrics endpoint, no
    # debuginfod, no relabel hashmod)
    probe = ("import sys, agent.cli, agent.daemon, agent.wiring\n"
             "from agent.config import RunConfig\n"
             "from agent.pipeline import Pipeline\n"
             "from symbolizer import Symbolizer\n"
             "Pipeline.from_config(RunConfig(export_dir=None))\n"
             "Symbolizer()\n"
             "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True, capture_output=True,
                                text=True).stdout.split())
    # THEN none of the heavy libraries only other configs need is loaded: HTTP and TLS (with
    # OpenSSL), Prometheus, the OTLP messages; nor bcc (its helper process compiles), nor an
    # ELF library (struct reads the headers)
    assert {"agent.cli", "agent.daemon", "symbolizer"} <= loaded
    heavy = {"requests", "urllib3", "ssl", "_hashlib", "prometheus_client", "opentelemetry", "bcc", "elftools"}
    assert heavy & loaded == set()
