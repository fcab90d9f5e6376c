"""Rules of the design that code review alone would let slip."""

from __future__ import annotations

import re
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
