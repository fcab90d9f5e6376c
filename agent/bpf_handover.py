"""BPF stage, hand-over: compile and load in a short-lived helper, keep only file descriptors.

In: ``LoadOptions``. Out: ``LoadedFds``: the program and map fds the helper process
(``python -m agent.bpf_loader``, the only code that imports bcc and so LLVM) created, received
over a Unix socket with SCM_RIGHTS. The helper then exits and takes bcc's ~150 MB with it;
the kernel objects live on because this process holds their fds.

Protocol: one SOCK_SEQPACKET message from the helper: JSON ``{"maps": {name: [key_size,
value_size, max_entries]}, "programs": [name, ...]}`` with the fds attached in that order
(maps, then programs), or ``{"error": "one line"}`` and no fds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from agent import bpf_abi
from agent.errors import BpfLoadError
from bpf import BPF_DIR

HELPER_TIMEOUT_S = 120.0
MAX_FDS = 32
PROGRAMS = ("on_cpu_sample", "tracepoint__sched__sched_process_exec", "tracepoint__sched__sched_process_exit")
MAPS = ("counts0", "counts1", "stacks0", "stacks1", "control", "counters", "pids", "filter_pids", "events")


@dataclass(frozen=True)
class LoadOptions:
    frequency_hz: int = 99
    pids: tuple[int, ...] = ()
    counts_map_size: int = bpf_abi.COUNTS_MAP_SIZE
    stack_map_size: int = bpf_abi.STACK_MAP_SIZE
    pids_map_size: int = bpf_abi.PIDS_MAP_SIZE

    def cflags(self) -> list[str]:
        """What bcc compiles bpf/profile.bpf.c with (tunables as -D, never by editing the C)."""
        return [
            f"-I{BPF_DIR}",
            f"-DCOUNTS_MAP_SIZE={self.counts_map_size}",
            f"-DSTACK_MAP_SIZE={self.stack_map_size}",
            f"-DPIDS_MAP_SIZE={self.pids_map_size}",
            "-Wno-macro-redefined",
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadOptions:
        raw = json.loads(text)
        raw["pids"] = tuple(raw.get("pids", ()))
        return cls(**raw)


@dataclass(frozen=True)
class MapFd:
    fd: int
    key_size: int
    value_size: int
    max_entries: int


@dataclass
class LoadedFds:
    """What the helper handed over; ``close`` releases every fd (and so the BPF objects)."""

    maps: dict[str, MapFd] = field(default_factory=dict)
    programs: dict[str, int] = field(default_factory=dict)
    helper_pid: int = 0

    def close(self) -> None:
        for m in self.maps.values():
            os.close(m.fd)
        for fd in self.programs.values():
            os.close(fd)
        self.maps.clear()
        self.programs.clear()


def send(sock: socket.socket, maps: dict[str, tuple[int, int, int, int]], programs: dict[str, int]) -> None:
    """Helper side: ``maps`` name -> (fd, key_size, value_size, max_entries)."""
    header = {"maps": {n: list(v[1:]) for n, v in maps.items()}, "programs": list(programs)}
    fds = [v[0] for v in maps.values()] + list(programs.values())
    socket.send_fds(sock, [json.dumps(header).encode()], fds)


def send_error(sock: socket.socket, message: str) -> None:
    sock.send(json.dumps({"error": message}).encode())


def receive(sock: socket.socket) -> LoadedFds:
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, MAX_FDS)
    loaded = LoadedFds()
    try:
        header: dict[str, Any] = (json.loads(data.decode()) if data
                                  else {"error": "the BPF helper exited without an answer"})
        if "error" in header:
            raise BpfLoadError(str(header["error"]))
        names = list(header["maps"]) + list(header["programs"])
        if len(names) != len(fds):
            raise BpfLoadError(f"the BPF helper sent {len(fds)} fds for {len(names)} objects")
        for name, fd in zip(header["maps"], fds, strict=False):
            key_size, value_size, max_entries = header["maps"][name]
            loaded.maps[name] = MapFd(fd, key_size, value_size, max_entries)
        for name, fd in zip(header["programs"], fds[len(header["maps"]):], strict=True):
            loaded.programs[name] = fd
        fds = []
    finally:
        for fd in fds:
            os.close(fd)
    return loaded


def load_in_helper(options: LoadOptions, timeout_s: float = HELPER_TIMEOUT_S, record_path: str = "") -> LoadedFds:
    """Run the helper, take its fds, wait for it to exit. Raises BpfLoadError with its one line.
    With ``record_path`` the helper also writes the compiled program there (agent/bpf_object.py)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with parent:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent.bpf_loader", str(child.fileno()), options.to_json(), record_path],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        try:
            parent.settimeout(timeout_s)
            loaded = receive(parent)
        except TimeoutError:
            proc.kill()
            raise BpfLoadError(f"the BPF helper did not answer within {timeout_s:g} s") from None
        finally:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    loaded.helper_pid = proc.pid
    missing = [n for n in (*MAPS, *PROGRAMS) if n not in loaded.maps and n not in loaded.programs]
    if missing:
        loaded.close()
        raise BpfLoadError(f"the BPF helper did not hand over {', '.join(missing)}")
    return loaded
