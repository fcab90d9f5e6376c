"""Symbolizer stage: the one error root, and the causes it counts failures by.

In: nothing. Out: ``SymbolizerError`` (carrying a ``Cause``) raised by the inner modules
(elf, files, symtab, kallsyms) and caught by the facade, which turns every expected
per-process failure into data: a count in ``SymbolizerStats.binaries_failed`` and
``module+0xOFFSET`` frames. Nothing raised here leaves ``Symbolizer.symbolize_*``.
"""

from __future__ import annotations

import enum
import errno


class Cause(enum.StrEnum):
    """Why a binary could not be named; the keys of ``SymbolizerStats.binaries_failed``."""

    GONE = "gone"  # the process or the file no longer exists
    PERMISSION = "permission"  # EACCES / EPERM opening the file or its /proc entry
    NOT_REGULAR = "not_regular"  # a FIFO, device, directory ...: never opened for reading
    TOO_LARGE = "too_large"  # file or section above the size caps
    BAD_ELF = "bad_elf"  # not ELF, truncated or hostile headers
    NO_SYMBOLS = "no_symbols"  # parsed fine, but no function symbols (fully stripped)
    FILE_CHANGED = "file_changed"  # the path now holds another file than the one mapped
    ESCAPES_ROOT = "escapes_root"  # too many symlinks or a path that cannot stay in the root
    IO_ERROR = "io_error"  # any other OSError
    DEBUG_MISMATCH = "debug_mismatch"  # a debug file whose build-id, CRC32 or ELF kind is not the binary's
    BAD_COMPRESSED = "bad_compressed"  # a MiniDebugInfo section that is not one valid xz stream
    INTERNAL = "internal"  # a bug in hostflame: logged once per binary


class SymbolizerError(Exception):
    """An expected failure to read or parse one binary (or kallsyms); ``cause`` classifies it."""

    def __init__(self, cause: Cause, message: str) -> None:
        super().__init__(f"{cause.value}: {message}")
        self.cause = cause


def cause_of_os_error(err: OSError) -> Cause:
    """Classify an OSError from opening or reading a binary."""
    if err.errno in (errno.ENOENT, errno.ESRCH, errno.ENOTDIR):
        return Cause.GONE
    if err.errno in (errno.EACCES, errno.EPERM):
        return Cause.PERMISSION
    if err.errno == errno.ELOOP:
        return Cause.ESCAPES_ROOT
    return Cause.IO_ERROR
