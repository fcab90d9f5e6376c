"""File outputs of ``hostflame record`` and ``view``: pprof, folded stacks, an HTML flame graph or
speedscope's JSON, by extension.

Stage: exporter. In: an ``agent.model.Profile`` (or, for ``view``, an ``agent.view`` stack
profile) and output paths. Out: one file per path,
each written atomically (a temporary file in the same directory, then ``os.replace``), so a
reader never sees a partial file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.errors import HostflameError, UsageError
from agent.folded import render_folded
from agent.model import Profile
from agent.pprof import build_pprof

__all__ = ["FilesExporter", "OutputError", "OutputFormat", "check_outputs", "format_for", "output_error", "render",
           "write_atomic", "write_outputs"]

FILE_MODE = 0o644


class OutputError(HostflameError, OSError):
    """A profile could not be written: one line for the CLI (exit 1), an ``OSError`` for the daemon."""


class OutputFormat(enum.Enum):
    """An output format and the file-name ending that selects it."""

    PPROF = ".pb.gz"
    FOLDED = ".folded"
    HTML = ".html"
    SPEEDSCOPE = ".speedscope.json"


def format_for(path: str | os.PathLike[str], allowed: Sequence[OutputFormat] = tuple(OutputFormat)) -> OutputFormat:
    """The format a path's ending selects among ``allowed``; ``UsageError`` for any other ending."""
    name = os.fspath(path).lower()
    for fmt in allowed:
        if name.endswith(fmt.value):
            return fmt
    *first, last = (f.value for f in allowed)
    choices = f"{', '.join(first)} or {last}" if first else last
    raise UsageError(f"unknown output format for {os.fspath(path)}: use {choices}")


def check_outputs(paths: Iterable[str | os.PathLike[str]],
                  allowed: Sequence[OutputFormat] = tuple(OutputFormat)) -> list[tuple[Path, OutputFormat]]:
    """Each path with its format, checked before any work starts: known ending, writable directory."""
    checked = []
    for raw in paths:
        path = Path(raw)
        fmt = format_for(path, allowed)
        directory = path.parent
        try:
            exists = directory.is_dir()
        except OSError as exc:  # a directory we may not even look into
            raise UsageError(f"cannot write {path}: cannot reach directory {directory}: {exc.strerror}") from None
        if not exists:
            raise UsageError(f"cannot write {path}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write {path}: directory {directory} is not writable")
        checked.append((path, fmt))
    return checked


def render(profile: Profile, fmt: OutputFormat) -> bytes:
    """The bytes of ``profile`` in ``fmt``."""
    if fmt is OutputFormat.PPROF:
        return build_pprof(profile)
    if fmt is OutputFormat.FOLDED:
        return render_folded(profile).encode()
    from agent.exporters.html import render_html, stacks_of  # the viewer is loaded only when wanted

    if fmt is OutputFormat.SPEEDSCOPE:
        from agent.view.formats import render_speedscope

        return render_speedscope(stacks_of(profile), f"hostflame {profile.host}").encode()
    return render_html(profile).encode()


def write_outputs(profile: Profile, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Write ``profile`` to every path in the format its ending selects; returns the paths written.

    All endings are checked first: with one unknown ending nothing is written at all.
    """
    targets = [(Path(p), format_for(p)) for p in paths]
    rendered: dict[OutputFormat, bytes] = {}
    for path, fmt in targets:
        if fmt not in rendered:
            rendered[fmt] = render(profile, fmt)
        write_atomic(path, rendered[fmt])
    return [path for path, _ in targets]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step; on failure no file and no temporary is left.

    Raises ``OutputError`` naming the path when the write fails.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), FILE_MODE)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise output_error(path, exc) from exc
        raise


def output_error(path: Path, exc: OSError) -> OutputError:
    error = OutputError(f"cannot write {path}: {exc.strerror or exc}")
    error.errno = exc.errno
    return error


class FilesExporter:
    """An ``Exporter`` writing every profile it gets to the same paths (the last one wins)."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.paths = [path for path, _ in check_outputs(paths)]

    def export(self, profile: Profile) -> None:
        write_outputs(profile, self.paths)

    def close(self) -> None:
        """Nothing is held open between exports."""
