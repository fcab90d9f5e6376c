"""BPF stage, the load helper: compile and load bpf/profile.bpf.c with bcc; the only bcc importer.

Runs only as a short-lived child (``python -m agent.bpf_loader SOCKET_FD OPTIONS_JSON``, started
by agent/bpf_handover.py): it compiles with the options' map sizes, loads the programs, sends
every map and program fd back over the socket and exits, so LLVM never lives in the agent.
In: ``LoadOptions`` as JSON. Out: fds over SCM_RIGHTS, or one error line.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent import bpf_handover, bpf_object, host
from agent.bpf_handover import LoadOptions
from agent.errors import BpfLoadError, HostflameError
from bpf import PROGRAM_PATH

log = logging.getLogger(__name__)


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """bcc's C compiler writes diagnostics to fd 2; keep them for the error line instead.
    The list is filled when the block ends, so read it after the ``with``."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.extend(tmp.read().decode(errors="replace").splitlines())


def _explain(exc: BaseException, diagnostics: list[str]) -> str:
    text = str(exc)
    errors = [d for d in diagnostics if "error" in d.lower()]
    if "Operation not permitted" in text or "EPERM" in text or isinstance(exc, PermissionError):
        return (
            "BPF not permitted: run as root, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE "
            "(and CAP_SYS_ADMIN before kernel 5.8)"
        )
    if errors:
        return f"BPF program failed to compile: {errors[0].strip()}"
    return f"BPF program failed to load: {text.splitlines()[0] if text else type(exc).__name__}"


def compile_program(options: LoadOptions) -> Any:
    """A loaded ``bcc.BPF``; its tracepoint programs are loaded but detached again (the agent
    attaches them itself with plain perf events)."""
    headers = host.find_kernel_headers()
    if not headers.found:
        raise BpfLoadError(
            "no kernel headers for bcc: install linux-headers-$(uname -r) or your distro's "
            "linux-headers package, or enable CONFIG_IKHEADERS"
        )
    if headers.kind != "modules-build":
        log.warning("kernel headers for bcc: using %s", headers.detail)
        os.environ["BCC_KERNEL_SOURCE"] = str(headers.source_dir)
    host.ensure_tracefs()
    failure: Exception | None = None
    with _stderr_captured() as diagnostics:
        try:
            import bcc  # the one place bcc is imported

            bpf = bcc.BPF(src_file=str(PROGRAM_PATH).encode(), cflags=options.cflags())
            bpf.load_func(b"on_cpu_sample", bcc.BPF.PERF_EVENT)
            for tracepoint in list(bpf.tracepoint_fds):
                bpf.detach_tracepoint(tracepoint)
        except Exception as exc:  # bcc raises bare Exception for every load failure
            failure = exc
    if failure is not None:
        raise BpfLoadError(_explain(failure, diagnostics)) from failure
    return bpf


def hand_over(bpf: Any, sock: socket.socket) -> None:
    maps = {}
    for name in bpf_handover.MAPS:
        table = bpf[name]
        maps[name] = (table.map_fd, ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf), int(table.max_entries))
    programs = {name: bpf.funcs[name.encode()].fd for name in bpf_handover.PROGRAMS}
    bpf_handover.send(sock, maps, programs)


def write_record(bpf: Any, path: str) -> None:
    """Save what was compiled, so the next start loads it without compiling (agent/bpf_object.py).
    A program that uses a map the agent does not know is not saved."""
    import bcc

    map_names = {bpf[name].map_fd: name for name in bpf_handover.MAPS}
    license = bcc.lib.bpf_module_license(bpf.module).decode()
    try:
        program = bpf_object.CompiledProgram(
            maps=tuple(bpf_object.describe_map(name, fd) for fd, name in map_names.items()),
            programs=tuple(bpf_object.describe_program(name, bpf.funcs[name.encode()].fd, license,
                                                       bpf.dump_func(name.encode()), map_names)
                           for name in bpf_handover.PROGRAMS))
        bpf_object.write_record(Path(path), program)
    except (OSError, ValueError) as exc:
        log.warning("not caching the compiled program: %s", exc)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="hostflame bpf helper: %(levelname)s: %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    try:
        options = LoadOptions.from_json(argv[1])
        bpf = compile_program(options)
        hand_over(bpf, sock)
        if len(argv) > 2 and argv[2]:
            write_record(bpf, argv[2])
    except HostflameError as exc:
        bpf_handover.send_error(sock, str(exc))
        return exc.exit_code
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
