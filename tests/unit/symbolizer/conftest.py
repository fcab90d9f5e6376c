"""Session fixture: the symbolizer's test binaries, compiled once per run (see sym_build)."""

from __future__ import annotations

import shutil

import pytest
from sym_build import TOOLS, Binaries, DebugVariants, build_binaries, build_debug_variants


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Binaries:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install gcc and binutils")
    return build_binaries(tmp_path_factory.mktemp("symbolizer-bin"))


@pytest.fixture(scope="session")
def debug_variants(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> DebugVariants:
    for tool in ("objcopy", "xz"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install binutils and xz-utils")
    return build_debug_variants(tmp_path_factory.mktemp("symbolizer-debug"), binaries.pie)
