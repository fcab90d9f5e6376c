"""Independent reference answers for the symbolizer tests: nm, readelf, objdump, and a tiny
/proc/PID/maps parser written here (not agent.procfs, not symbolizer), plus a runner for the
compiled target program."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from symbolizer.model import Mapping

READY_TIMEOUT_S = 10.0


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def parse_maps(text: str) -> list[Mapping]:
    """/proc/PID/maps lines -> Mapping (the path may contain spaces)."""
    out = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        path = fields[5] if len(fields) > 5 else ""
        out.append(Mapping(start, end, fields[1], int(fields[2], 16), major, minor, int(fields[4]), path))
    return out


def read_maps(pid: int) -> list[Mapping]:
    return parse_maps(Path(f"/proc/{pid}/maps").read_text())


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    value: int
    size: int


def readelf_functions(path: Path, dynamic: bool = False) -> list[ElfSymbol]:
    """Defined FUNC / IFUNC symbols of .symtab (or .dynsym), as `readelf -sW` lists them."""
    wanted = "'.dynsym'" if dynamic else "'.symtab'"
    found = []
    in_table = False
    for line in run("readelf", "-W", "--syms", path).splitlines():
        if line.startswith("Symbol table "):
            in_table = wanted in line
            continue
        fields = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if in_table and len(fields) >= 8 and fields[0].endswith(":") and fields[3] in ("FUNC", "IFUNC"):
            if fields[6] != "UND":
                size = int(fields[2], 16) if fields[2].startswith("0x") else int(fields[2])
                found.append(ElfSymbol(fields[7].split("@")[0], int(fields[1], 16), size))
    return found


def nm_address(path: Path, name: str, dynamic: bool = False) -> int:
    """The value nm prints for ``name`` (a defined text symbol)."""
    text = run("nm", "--defined-only", *(["-D"] if dynamic else []), path)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].split("@")[0] == name:
            return int(fields[0], 16)
    raise AssertionError(f"nm: no {name} in {path}")


def nm_sorted_text(path: Path) -> list[tuple[int, str]]:
    """Text symbols by address (`nm -n`), for "which function comes next"."""
    out = []
    for line in run("nm", "-n", "--defined-only", path).splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] in "tTwW":
            out.append((int(fields[0], 16), fields[2]))
    return out


def readelf_build_id(path: Path) -> bytes:
    match = re.search(r"Build ID: ([0-9a-f]+)", run("readelf", "-n", path))
    return bytes.fromhex(match.group(1)) if match else b""


@dataclass(frozen=True)
class ProgramHeader:
    file_offset: int
    elf_vaddr: int
    filesz: int
    flags: str


def readelf_loads(path: Path) -> list[ProgramHeader]:
    out = []
    for line in run("readelf", "-lW", path).splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD":
            flags = "".join(fields[7:-1])
            out.append(ProgramHeader(int(fields[1], 16), int(fields[2], 16), int(fields[4], 16), flags))
    return out


def objdump_file_offset(path: Path, name: str) -> int:
    """The file offset `objdump -d -F` prints for function ``name``."""
    pattern = re.compile(rf"^[0-9a-f]+ <{re.escape(name)}> \(File Offset: 0x([0-9a-f]+)\):$", re.M)
    match = pattern.search(run("objdump", "-d", "-F", path))
    if match is None:
        raise AssertionError(f"objdump: no {name} in {path}")
    return int(match.group(1), 16)


def objdump_last_instruction_end(path: Path, name: str) -> tuple[str, int]:
    """(mnemonic, address just past it) of the last instruction objdump shows in ``name``."""
    text = run("objdump", "-d", "--no-show-raw-insn", f"--disassemble={name}", path)
    lines = [ln for ln in text.splitlines() if re.match(r"^\s+[0-9a-f]+:\t", ln)]
    last = lines[-1]
    addr = int(last.split(":")[0], 16)
    mnemonic = last.split("\t")[1].split()[0]
    raw = run("objdump", "-d", f"--disassemble={name}", path)
    raw_last = [ln for ln in raw.splitlines() if re.match(r"^\s+[0-9a-f]+:\t", ln)][-1]
    size = len(raw_last.split("\t")[1].split())
    return mnemonic, addr + size


@dataclass
class Child:
    """A running target program and the addresses it printed of itself."""

    pid: int
    printed: dict[str, int]
    process: subprocess.Popen[bytes]


@contextmanager
def running(binary: Path, *args: str) -> Iterator[Child]:
    """Start ``binary``, wait for its "ready" line, yield it; kill it afterwards."""
    process = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        output = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"ready\n" not in output:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                raise AssertionError(f"{binary} did not print 'ready' within {READY_TIMEOUT_S} s: {output!r}")
            output += chunk
        printed = {}
        for line in output.decode().splitlines():
            if line != "ready":
                name, value = line.split()
                printed[name] = int(value, 16)
        yield Child(process.pid, printed, process)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def mapping_of(mappings: list[Mapping], addr: int) -> Mapping:
    for mapping in mappings:
        if mapping.start <= addr < mapping.end:
            return mapping
    raise AssertionError(f"{addr:#x} is in no mapping")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging when the body blocks longer than ``seconds``."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
