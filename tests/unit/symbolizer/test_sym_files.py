"""symbolizer.files: opening mapped files inside a (fake) container root, never escaping it,
never opening FIFOs or devices."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sym_build import Binaries
from sym_helpers import deadline, mapping_of, read_maps, running

from symbolizer.errors import Cause, SymbolizerError
from symbolizer.files import map_files_path, open_beneath, open_mapped_file, open_regular
from symbolizer.model import Mapping

CAP = 1 << 30


@pytest.fixture
def fake_root(tmp_path: Path, binaries: Binaries) -> Path:
    """A container-like tree: root/usr/bin/prog, bin -> usr/bin, lib -> /usr/lib (absolute,
    meant inside the root), and traps that would lead out of it."""
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "lib").mkdir()
    shutil.copy(binaries.pie, root / "usr" / "bin" / "prog")
    shutil.copy(binaries.lib, root / "usr" / "lib" / "libhfsym.so")
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("/usr/lib")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(binaries.nopie, outside / "prog")
    (root / "usr" / "bin" / "escape_abs").symlink_to(outside / "prog")  # a host path
    (root / "usr" / "bin" / "escape_rel").symlink_to("../../../../../../outside/prog")
    (root / "usr" / "bin" / "dotdot_ok").symlink_to("../../../../../../usr/bin/prog")
    (root / "loop_a").symlink_to("loop_b")
    (root / "loop_b").symlink_to("loop_a")
    os.mkfifo(root / "fifo")
    return root


def inode(path: Path) -> int:
    return path.stat().st_ino


def opened_inode(fd: int) -> int:
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def test_paths_through_symlinks_inside_the_root_resolve(fake_root: Path) -> None:
    # GIVEN a relative symlink dir (bin -> usr/bin), an absolute one meant inside the root
    # (lib -> /usr/lib) and a ../ chain that climbs above the root and back down
    prog = inode(fake_root / "usr" / "bin" / "prog")
    # WHEN / THEN each opens the file inside the root
    assert opened_inode(open_beneath(str(fake_root), "/bin/prog", CAP)) == prog
    assert opened_inode(open_beneath(str(fake_root), "/usr/bin/dotdot_ok", CAP)) == prog
    lib = inode(fake_root / "usr" / "lib" / "libhfsym.so")
    assert opened_inode(open_beneath(str(fake_root), "/lib/libhfsym.so", CAP)) == lib


@pytest.mark.parametrize("path", ["/usr/bin/escape_abs", "/usr/bin/escape_rel", "/../outside/prog"])
def test_symlinks_and_dotdot_never_leave_the_root(fake_root: Path, path: str) -> None:
    # GIVEN a path whose symlinks (absolute host path, or ../ above the root) point at a file
    # that exists on the host outside the root, but not inside it
    assert (fake_root.parent / "outside" / "prog").exists()
    # WHEN it is opened beneath the root
    # THEN it is not found: the walk stayed inside the root
    with pytest.raises(SymbolizerError) as raised:
        open_beneath(str(fake_root), path, CAP)
    assert raised.value.cause is Cause.GONE


def test_symlink_loop_is_refused(fake_root: Path) -> None:
    with pytest.raises(SymbolizerError) as raised:
        open_beneath(str(fake_root), "/loop_a", CAP)
    assert raised.value.cause is Cause.ESCAPES_ROOT


@pytest.mark.parametrize("path", ["/fifo", "/usr", "/"])
def test_fifo_and_directories_are_never_opened(fake_root: Path, path: str) -> None:
    # GIVEN a FIFO nobody writes to (opening it for reading would block forever) or a directory
    # WHEN it is opened beneath the root, under a 5 s deadline
    with deadline(5.0), pytest.raises(SymbolizerError) as raised:
        open_beneath(str(fake_root), path, CAP)
    # THEN it is refused as not regular, without blocking
    assert raised.value.cause is Cause.NOT_REGULAR


def test_fifo_by_plain_path_is_never_opened(fake_root: Path) -> None:
    with deadline(5.0), pytest.raises(SymbolizerError) as raised:
        open_regular(str(fake_root / "fifo"), CAP)
    assert raised.value.cause is Cause.NOT_REGULAR


def test_a_file_used_as_a_directory_is_gone(fake_root: Path) -> None:
    with pytest.raises(SymbolizerError) as raised:
        open_beneath(str(fake_root), "/usr/bin/prog/x", CAP)
    assert raised.value.cause is Cause.GONE


def test_size_cap_refuses_large_files(fake_root: Path) -> None:
    with pytest.raises(SymbolizerError) as raised:
        open_beneath(str(fake_root), "/usr/bin/prog", 100)
    assert raised.value.cause is Cause.TOO_LARGE


def _fake_proc(tmp_path: Path, fake_root: Path, pid: int) -> Path:
    """proc/PID/root -> fake_root, and no map_files (as for an unprivileged reader)."""
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "root").symlink_to(fake_root)
    return proc


def test_mapped_file_falls_back_to_the_process_root(tmp_path: Path, fake_root: Path) -> None:
    # GIVEN a fake /proc where PID 4242's root is the container tree and map_files is absent,
    # and a mapping of /bin/prog (deleted) with the inode of the file in that tree
    proc = _fake_proc(tmp_path, fake_root, 4242)
    prog = inode(fake_root / "usr" / "bin" / "prog")
    mapping = Mapping(0x1000, 0x2000, "r-xp", 0x1000, 0, 0, prog, "/bin/prog (deleted)")
    # WHEN / THEN it opens the file inside the root
    assert opened_inode(open_mapped_file(str(proc), 4242, mapping, CAP)) == prog


def test_mapped_file_with_another_inode_is_refused(tmp_path: Path, fake_root: Path) -> None:
    # GIVEN a mapping whose inode is not that of the file now at its path (replaced binary)
    proc = _fake_proc(tmp_path, fake_root, 4242)
    mapping = Mapping(0x1000, 0x2000, "r-xp", 0x1000, 0, 0, inode(fake_root / "usr") + 12345, "/bin/prog")
    # WHEN / THEN it is refused: its symbols would be another file's
    with pytest.raises(SymbolizerError) as raised:
        open_mapped_file(str(proc), 4242, mapping, CAP)
    assert raised.value.cause is Cause.FILE_CHANGED


def test_mapped_file_of_a_gone_process(tmp_path: Path, fake_root: Path) -> None:
    proc = _fake_proc(tmp_path, fake_root, 4242)
    mapping = Mapping(0x1000, 0x2000, "r-xp", 0x1000, 0, 0, 1, "/bin/prog")
    with pytest.raises(SymbolizerError) as raised:
        open_mapped_file(str(proc), 999999, mapping, CAP)
    assert raised.value.cause is Cause.GONE


@pytest.mark.root
def test_map_files_opens_a_deleted_binary_of_a_live_process(tmp_path: Path, binaries: Binaries) -> None:
    if os.geteuid() != 0:
        pytest.skip("map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE")
    # GIVEN a running copy of the program whose file was then deleted
    copy = tmp_path / "doomed"
    shutil.copy(binaries.pie, copy)
    with running(copy) as child:
        copy.unlink()
        mapping = mapping_of(read_maps(child.pid), child.printed["hf_work"])
        assert mapping.path.endswith(" (deleted)")
        # WHEN it is opened through /proc/PID/map_files
        fd = open_regular(map_files_path("/proc", child.pid, mapping), CAP)
        # THEN it is the mapped inode
        assert opened_inode(fd) == mapping.inode
