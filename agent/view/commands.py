"""``hostflame view`` and ``hostflame diff``: pprof files in, viewer outputs out.

In: paths of pprof files (gzip-compressed or not, from any producer) and output paths.
Out: files written atomically (HTML page, speedscope JSON, folded stacks; a diff writes HTML).
Every output path is checked and every output rendered before the first one is written, so
a bad input or output leaves no file behind. Errors: ``UsageError`` (exit 2) for a missing,
unreadable or non-pprof input and for an unknown output ending; ``OutputError`` (exit 1) when
a write fails.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from agent.errors import UsageError
from agent.exporters.files import OutputFormat, check_outputs, write_atomic
from agent.pprof import parse_pprof
from agent.view.flame import diff_data, view_data
from agent.view.stacks import StackProfile, read_stacks

__all__ = ["DIFF_FORMATS", "VIEW_FORMATS", "diff", "load_stacks", "render_stacks", "view"]

VIEW_FORMATS = (OutputFormat.HTML, OutputFormat.SPEEDSCOPE, OutputFormat.FOLDED)
DIFF_FORMATS = (OutputFormat.HTML,)


def load_stacks(path: Path) -> StackProfile:
    """The stacks of the pprof at ``path``; ``UsageError`` naming the file when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings(record=True) as caught:  # protobuf warns (instead of failing) on some garbage
            warnings.simplefilter("always")
            message = parse_pprof(data)
        if caught:
            raise DecodeError(str(caught[0].message))
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, DecodeError):
        raise UsageError(f"{path} is not a pprof profile (neither protobuf nor gzip-compressed protobuf)") from None
    _check_message(path, message)
    try:
        return read_stacks(message)
    except (IndexError, KeyError, ValueError):
        raise UsageError(f"{path} is not a valid pprof profile (an index points outside its tables)") from None


def _check_message(path: Path, message: Any) -> None:
    if not message.string_table or message.string_table[0] != "":
        raise UsageError(f"{path} is not a pprof profile (no string table starting with \"\")")
    if not message.sample_type and len(message.sample):
        raise UsageError(f"{path} is not a valid pprof profile (samples without sample types)")


def _write_all(rendered: list[tuple[Path, bytes]]) -> int:
    for path, data in rendered:
        write_atomic(path, data)
    return 0


def view(profile_path: Path, outputs: Sequence[Path]) -> int:
    """Write ``profile_path`` to every output in the format its ending selects."""
    if not outputs:
        raise UsageError("no output: give -o PATH (.html, .speedscope.json or .folded)")
    targets = check_outputs(outputs, VIEW_FORMATS)
    stacks = load_stacks(profile_path)
    rendered = [(path, render_stacks(stacks, fmt, profile_path.name)) for path, fmt in targets]
    return _write_all(rendered)


def render_stacks(stacks: StackProfile, fmt: OutputFormat, source: str) -> bytes:
    """The bytes of ``stacks`` in ``fmt`` (one of VIEW_FORMATS); ``source`` names the input file."""
    if fmt is OutputFormat.HTML:
        from agent.exporters.html import render_data_page

        title = f"hostflame: {stacks.host or source}"
        return render_data_page(view_data(stacks, source), title).encode()
    if fmt is OutputFormat.SPEEDSCOPE:
        from agent.view.formats import render_speedscope

        return render_speedscope(stacks, stacks.host or source).encode()
    from agent.view.formats import render_stacks_folded

    return render_stacks_folded(stacks).encode()


def diff(base_path: Path, new_path: Path, outputs: Sequence[Path]) -> int:
    """Write the differential flame graph of ``new_path`` against ``base_path``."""
    if not outputs:
        raise UsageError("no output: give -o PATH.html")
    targets = check_outputs(outputs, DIFF_FORMATS)
    base, new = load_stacks(base_path), load_stacks(new_path)
    from agent.exporters.html import render_data_page

    data = diff_data(base, new, (base_path.name, new_path.name))
    page = render_data_page(data, f"hostflame diff: {base_path.name} -> {new_path.name}").encode()
    return _write_all([(path, page) for path, _ in targets])
