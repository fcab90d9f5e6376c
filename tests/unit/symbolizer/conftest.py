"""Session fixture: the symbolizer's test binaries, compiled once per run (see sym_build)."""

from __future__ import annotations

import shutil
from pathlib import Path

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


@pytest.fixture
def fake_proc(tmp_path: Path) -> tuple[Path, Path]:
    """proc/4242/root -> root/ (and no map_files), as for a container process."""
    root = tmp_path / "root"
    root.mkdir()
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "root").symlink_to(root)
    return proc, root
