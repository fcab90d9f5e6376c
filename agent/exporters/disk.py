"""Disk exporter: one gzip-compressed pprof file per profile in a directory.

Stage: exporter. In: ``agent.model.Profile`` values. Out: files named
``hostflame-<UTC start, 20231114T221320Z>-<host>.pb.gz`` (``-1``, ``-2``... appended when a
name is taken, as with several targets in one interval), written atomically. With ``max_files``
the oldest of its own files beyond that many are removed after each write.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from agent.errors import UsageError
from agent.exporters.files import OutputError, write_atomic
from agent.model import Profile
from agent.pprof import build_pprof

__all__ = ["DiskExporter", "file_name"]

log = logging.getLogger(__name__)

PREFIX = "hostflame-"
SUFFIX = ".pb.gz"
_UNSAFE_HOST = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(profile: Profile, attempt: int = 0) -> str:
    """The file name for ``profile``; ``attempt`` > 0 gives the alternatives when it is taken."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(profile.start_ns // 1_000_000_000))
    host = _UNSAFE_HOST.sub("_", profile.host).strip("._") or "unknown"
    extra = f"-{attempt}" if attempt else ""
    return f"{PREFIX}{stamp}-{host}{extra}{SUFFIX}"


class DiskExporter:
    """Writes each profile it is given as a new pprof file in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], max_files: int | None = None) -> None:
        self.directory = Path(directory)
        if max_files is not None and max_files < 1:
            raise UsageError(f"max_files must be at least 1, not {max_files}")
        self.max_files = max_files
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = OutputError(f"cannot create profile directory {self.directory}: {exc.strerror or exc}")
            error.errno = exc.errno
            raise error from exc

    def export(self, profile: Profile) -> None:
        self.write(profile)

    def write(self, profile: Profile) -> Path:
        """Write ``profile``; returns the new file's path."""
        attempt = 0
        path = self.directory / file_name(profile)
        while path.exists():  # one writer per directory: the check and the replace cannot race
            attempt += 1
            path = self.directory / file_name(profile, attempt)
        write_atomic(path, build_pprof(profile))
        if self.max_files is not None:
            self._prune(self.max_files)
        return path

    def close(self) -> None:
        """Nothing is held open between exports."""

    def _prune(self, keep: int) -> None:
        ours = [p for p in self.directory.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
        if len(ours) <= keep:
            return
        ours.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        for old in ours[: len(ours) - keep]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove old profile %s: %s (check the directory's permissions)", old, exc)
