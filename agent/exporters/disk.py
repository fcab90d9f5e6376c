"""Disk exporter: one gzip-compressed pprof file per profile in a directory.

Stage: exporter. In: ``agent.model.Profile`` values, one at a time or an interval's targets at
once. Out: files named ``hostflame-<UTC start, 20231114T221320Z>-<host>[-<service_name>].pb.gz``
(``-1``, ``-2``... appended when a name is taken). A batch is written as hidden temporaries,
made durable with one ``syncfs`` of the directory's filesystem, then renamed: a reader or a
crash never leaves a partial file under a final name, and a hundred targets cost one flush,
not a hundred ``fsync`` calls. Retention, applied to its own files after each batch:
``max_files`` (newest kept), ``max_age_s`` (older files removed) and ``max_total_bytes``
(oldest removed until the directory's hostflame files fit).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from agent.errors import UsageError
from agent.exporters.files import FILE_MODE, OutputError, output_error
from agent.model import Profile, TargetProfile
from agent.pprof import build_pprof

__all__ = ["DiskExporter", "file_name"]

log = logging.getLogger(__name__)

PREFIX = "hostflame-"
SUFFIX = ".pb.gz"
_UNSAFE_HOST = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(profile: Profile, attempt: int = 0, service: str = "") -> str:
    """The file name for ``profile``; ``attempt`` > 0 gives the alternatives when it is taken."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(profile.start_ns // 1_000_000_000))
    host = _UNSAFE_HOST.sub("_", profile.host).strip("._") or "unknown"
    tag = _UNSAFE_HOST.sub("_", service).strip("._")
    extra = f"-{attempt}" if attempt else ""
    return f"{PREFIX}{stamp}-{host}{'-' + tag if tag else ''}{extra}{SUFFIX}"


class DiskExporter:
    """Writes each profile it is given as a new pprof file in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], max_files: int | None = None,
                 max_age_s: float = 0.0, max_total_bytes: int = 0) -> None:
        self.directory = Path(directory)
        if max_files is not None and max_files < 1:
            raise UsageError(f"max_files must be at least 1, not {max_files}")
        self.max_files = max_files
        self.max_age_s = max_age_s
        self.max_total_bytes = max_total_bytes
        self.written = 0
        self._next_attempt: dict[str, int] = {}  # base file name -> first suffix not yet tried
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = OutputError(f"cannot create profile directory {self.directory}: {exc.strerror or exc}")
            error.errno = exc.errno
            raise error from exc
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Temporaries a crashed run left between writing and renaming (one writer per
        directory: none of them is being written now) are half-written files: they go."""
        try:
            names = [p for p in self.directory.iterdir() if p.name.startswith(f".{PREFIX}")
                     and p.name.endswith(f"{SUFFIX}.tmp")]
        except OSError:
            return  # unreadable: the first write will say so
        for stale in names:
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove a temporary left by an earlier run, %s: %s", stale, exc.strerror or exc)

    def export(self, profile: Profile | TargetProfile) -> None:
        if isinstance(profile, TargetProfile):
            self.write(profile.profile, profile.label("service_name"))
        else:
            self.write(profile)

    def write(self, profile: Profile, service: str = "") -> Path:
        """Write ``profile``; returns the new file's path. Raises ``OutputError`` naming it."""
        written, failed = self.write_all([(profile, service)])
        if failed:
            raise failed[0]
        return written[0]

    def export_all(self, targets: Sequence[TargetProfile]) -> tuple[list[Path], list[OutputError]]:
        """One interval's targets as one batch: see ``write_all``."""
        return self.write_all([(t.profile, t.label("service_name")) for t in targets])

    def write_all(self, profiles: Sequence[tuple[Profile, str]]) -> tuple[list[Path], list[OutputError]]:
        """Write each (profile, service name) as a new file; returns the paths written and the
        errors of those that could not be (the others are written all the same)."""
        pending: list[tuple[Path, Path]] = []  # (temporary, final)
        failed: list[OutputError] = []
        for profile, service in profiles:
            path = self._free_path(profile, service)
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                _write_new(tmp, build_pprof(profile))
                pending.append((tmp, path))
            except OSError as exc:
                failed.append(output_error(path, exc))
        if pending:
            _sync_filesystem(self.directory)
        written = []
        for tmp, path in pending:
            try:
                os.replace(tmp, path)
                written.append(path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                failed.append(output_error(path, exc))
        self.written += len(written)
        if written and (self.max_files is not None or self.max_age_s > 0 or self.max_total_bytes > 0):
            self._prune(keep=set(written))
        return written, failed

    def _free_path(self, profile: Profile, service: str) -> Path:
        """A name no file has. Many targets of one interval can share a name (a hundred workers
        of one executable): the suffix to try next is remembered per name, so that costs one
        existence check per file, not one per file before it."""
        base = file_name(profile, service=service)
        if base not in self._next_attempt and len(self._next_attempt) >= 4096:
            self._next_attempt.clear()  # names of past intervals: their stamps do not come back
        attempt = self._next_attempt.get(base, 0)
        path = self.directory / (file_name(profile, attempt, service) if attempt else base)
        while path.exists():  # one writer per directory: the check and the replace cannot race
            attempt += 1
            path = self.directory / file_name(profile, attempt, service)
        self._next_attempt[base] = attempt + 1
        return path

    def close(self, grace_s: float = 0.0) -> None:
        """Nothing is held open between exports."""

    def _prune(self, keep: set[Path]) -> None:
        """Apply the retention limits to our own files; the files just written (``keep``) stay."""
        ours = []
        for p in self.directory.iterdir():
            if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                ours.append((st.st_mtime_ns, p.name, st.st_size, p))
        ours.sort()  # oldest first
        doomed: list[Path] = []
        if self.max_files is not None and len(ours) > self.max_files:
            doomed.extend(p for *_, p in ours[: len(ours) - self.max_files])
        if self.max_age_s > 0:
            cutoff = time.time_ns() - int(self.max_age_s * 1e9)
            doomed.extend(p for mtime, _, _, p in ours if mtime < cutoff)
        if self.max_total_bytes > 0:
            total = sum(size for _, _, size, _ in ours)
            for _, _, size, p in ours:
                if total <= self.max_total_bytes:
                    break
                doomed.append(p)
                total -= size
        for old in dict.fromkeys(doomed):
            if old in keep:
                continue
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove old profile %s: %s (check the directory's permissions)", old, exc)


def _write_new(tmp: Path, data: bytes) -> None:
    """``data`` into a new file ``tmp`` (not flushed: the batch's syncfs does that). A
    temporary left by a crash is replaced; a symlink is never followed. On failure nothing is
    left."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed what open gave
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _sync_filesystem(directory: Path) -> None:
    """Flush every written file of ``directory``'s filesystem to disk in one call (syncfs(2));
    on a libc without it, or if it fails, ``os.sync``."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.sync()
        return
    try:
        syncfs = getattr(_LIBC, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)

