"""Symbolizer stage: open the file behind an executable mapping, safely.

In: a proc root, a pid and a ``Mapping`` (a line of that process's maps). Out: a read-only,
close-on-exec fd of a *regular* file whose inode is the mapping's, or ``SymbolizerError``.

Two routes, in order:
1. ``{proc_root}/{pid}/map_files/{start:x}-{end:x}``: the exact file the process mapped, even
   when deleted or inside another mount namespace (needs CAP_SYS_ADMIN or
   CAP_CHECKPOINT_RESTORE).
2. ``{proc_root}/{pid}/root`` + the mapping's path (minus a trailing `` (deleted)``), resolved
   one component at a time with ``O_NOFOLLOW`` relative to held directory fds, so a symlink
   in a container (absolute or ``..``) is resolved inside that container's root and never
   leads out of it.

A FIFO, device or directory is rejected from ``stat`` before any ``open`` for reading, and the
reading ``open`` uses ``O_NONBLOCK`` and is re-checked with ``fstat``, so a path swapped under
us cannot hang the agent.
"""

from __future__ import annotations

import os
import stat

from symbolizer.errors import Cause, SymbolizerError, cause_of_os_error
from symbolizer.model import Mapping

READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 40
MAX_COMPONENTS = 4096
DELETED_SUFFIX = " (deleted)"


def check_regular(st: os.stat_result, max_size: int) -> None:
    """Raise unless ``st`` describes a regular file no larger than ``max_size`` bytes."""
    if not stat.S_ISREG(st.st_mode):
        raise SymbolizerError(Cause.NOT_REGULAR, f"mode {stat.filemode(st.st_mode)}")
    if st.st_size > max_size:
        raise SymbolizerError(Cause.TOO_LARGE, f"{st.st_size} bytes > cap {max_size}")


def _open_checked(name: str, expected: os.stat_result, dir_fd: int | None) -> int:
    """Open ``name`` for reading and prove, by fstat, it is the regular file ``expected``."""
    fd = os.open(name, READ_FLAGS | (os.O_NOFOLLOW if dir_fd is not None else 0), dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            raise SymbolizerError(Cause.FILE_CHANGED, f"{name} changed while being opened")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str, max_size: int) -> int:
    """Open ``path`` (following symlinks, e.g. a map_files magic link) if it is a regular file."""
    try:
        st = os.stat(path)
        check_regular(st, max_size)
        return _open_checked(path, st, None)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"{path}: {err.strerror}") from err


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def open_beneath(root: str, path: str, max_size: int) -> int:
    """Open ``path`` as if ``root`` were ``/``: no symlink or ``..`` can leave ``root``.

    Every component is opened with ``O_PATH | O_NOFOLLOW`` relative to the directory fd before
    it, and symlinks are expanded here, absolute ones from ``root``; so swapping a component for
    a symlink at any moment still resolves inside ``root``.
    """
    root_fd = open_root(root)
    try:
        return open_beneath_fd(root_fd, path, max_size, root)
    finally:
        os.close(root_fd)


def open_root(root: str) -> int:
    """An ``O_PATH`` fd of the directory ``root`` (following symlinks, e.g. /proc/PID/root)."""
    try:
        return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"{root}: {err.strerror}") from err


def open_beneath_fd(root_fd: int, path: str, max_size: int, root_name: str = "") -> int:
    """``open_beneath`` for a root held open as ``root_fd`` (which stays open); ``root_name``
    only prefixes error messages."""
    try:
        first = os.dup(root_fd)
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"{root_name}: {err.strerror}") from err
    dirs = [first]  # dirs[0] is the root; dirs[-1] the directory being walked
    pending = _split(path)
    pending.reverse()  # popped from the end
    links = 0
    try:
        while pending:
            if len(pending) > MAX_COMPONENTS:
                raise SymbolizerError(Cause.ESCAPES_ROOT, f"{path}: too many components")
            name = pending.pop()
            if name == "..":
                if len(dirs) > 1:
                    os.close(dirs.pop())
                continue
            fd = os.open(name, PATH_FLAGS, dir_fd=dirs[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise SymbolizerError(Cause.ESCAPES_ROOT, f"{path}: more than {MAX_SYMLINKS} symlinks")
                target = os.readlink(name, dir_fd=dirs[-1])
                if target.startswith("/"):
                    while len(dirs) > 1:
                        os.close(dirs.pop())
                parts = _split(target)
                parts.reverse()
                pending.extend(parts)
            elif pending:
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise SymbolizerError(Cause.GONE, f"{path}: {name} is not a directory")
                dirs.append(fd)
            else:
                os.close(fd)
                check_regular(st, max_size)
                return _open_checked(name, st, dirs[-1])
        raise SymbolizerError(Cause.NOT_REGULAR, f"{path}: resolves to the root directory")
    except OSError as err:
        raise SymbolizerError(cause_of_os_error(err), f"{root_name}{path}: {err.strerror}") from err
    finally:
        for fd in dirs:
            os.close(fd)


def map_files_path(proc_root: str, pid: int, mapping: Mapping) -> str:
    return f"{proc_root}/{pid}/map_files/{mapping.start:x}-{mapping.end:x}"


def open_mapped_file(proc_root: str, pid: int, mapping: Mapping, max_size: int) -> int:
    """Open the file ``mapping`` of process ``pid`` maps; map_files first, then the process root."""
    try:
        fd = open_regular(map_files_path(proc_root, pid, mapping), max_size)
    except SymbolizerError:
        path = mapping.path.removesuffix(DELETED_SUFFIX)
        fd = open_beneath(f"{proc_root}/{pid}/root", path, max_size)
    try:
        # The device number may differ under overlayfs (maps shows the real inode's device),
        # so only the inode number must match.
        if os.fstat(fd).st_ino != mapping.inode:
            raise SymbolizerError(Cause.FILE_CHANGED, f"{mapping.path}: inode is not {mapping.inode}")
    except OSError as err:
        os.close(fd)
        raise SymbolizerError(cause_of_os_error(err), f"{mapping.path}: {err.strerror}") from err
    except BaseException:
        os.close(fd)
        raise
    return fd
