"""BPF stage, the compiled-program cache: start without compiling when nothing changed.

In: ``LoadOptions``. Out: ``LoadedFds``, from a cached compiled program when one matches this
program source, these compile options and this kernel (maps created and programs loaded here
with plain ``bpf()`` calls: no helper process, no clang, no LLVM), else from the compiling
helper (agent/bpf_handover.py), which writes the record for the next start.

A record holds what bcc produced: each map's create parameters, and each program's type,
license and instructions, with the instructions that carry a map fd (``ld_imm64`` whose source
register says "pseudo map fd" or "pseudo map value") listed by map name, so fresh fds are
patched in at load. The key hashes the source and header, the cflags, ``/proc/version`` and the
possible CPUs. A record the kernel refuses is deleted and the helper compiles again; a record
not owned by this user, or writable by others, is never loaded.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent import bpf_sys
from agent.bpf_handover import MAPS, PROGRAMS, LoadedFds, LoadOptions, MapFd, load_in_helper
from bpf import HEADER_PATH, PROGRAM_PATH

try:  # CPython's own SHA-256: hashlib would load OpenSSL's libcrypto into the daemon for one digest
    from _sha256 import sha256
except ImportError:  # an interpreter built without it
    from hashlib import sha256

log = logging.getLogger(__name__)

FORMAT = 1
_INSN = 8
_LD_IMM64 = 0x18
_PSEUDO_MAP_FD = 1
_PSEUDO_MAP_VALUE = 2
_MAP_INFO = struct.Struct("=IIIIII16s")  # struct bpf_map_info: type, id, key/value size, max_entries, flags, name
_VERIFIER_LOG_BYTES = 1 << 20


@dataclass(frozen=True)
class MapSpec:
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    prog_type: int
    license: str
    insns: bytes
    relocations: tuple[tuple[int, str], ...]  # (instruction index, map name)


@dataclass(frozen=True)
class CompiledProgram:
    maps: tuple[MapSpec, ...]
    programs: tuple[ProgramSpec, ...]


def cache_key(options: LoadOptions, *, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> str:
    digest = sha256(f"hostflame-bpf-{FORMAT}\0".encode())
    for part in (PROGRAM_PATH.read_bytes(), HEADER_PATH.read_bytes(), " ".join(options.cflags()).encode(),
                 (proc_root / "version").read_bytes(), str(bpf_sys.possible_cpus(sys_root)).encode()):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return str(digest.hexdigest())


def cache_file(options: LoadOptions, cache_dir: Path) -> Path:
    return cache_dir / "bpf" / f"profile-{cache_key(options)}.json"


# --- relocations --------------------------------------------------------------------------
def _map_fd_slots(insns: bytes) -> list[tuple[int, int]]:
    """(instruction index, fd) of every ld_imm64 that loads a map by fd."""
    slots = []
    index = 0
    while index * _INSN < len(insns):
        code, regs, _off, imm = struct.unpack_from("=BBhi", insns, index * _INSN)
        if code == _LD_IMM64:
            if regs >> 4 in (_PSEUDO_MAP_FD, _PSEUDO_MAP_VALUE):
                slots.append((index, imm))
            index += 2  # ld_imm64 takes two instruction slots
        else:
            index += 1
    return slots


def find_relocations(insns: bytes, map_names: dict[int, str]) -> tuple[tuple[int, str], ...]:
    """Where ``insns`` (as bcc made them, fds inside) use a map, by name; ValueError when an
    instruction names an fd that is none of ``map_names``."""
    relocations = []
    for index, fd in _map_fd_slots(insns):
        if fd not in map_names:
            raise ValueError(f"instruction {index} uses fd {fd}, which is none of the program's maps")
        relocations.append((index, map_names[fd]))
    return tuple(relocations)


def patch(insns: bytes, relocations: tuple[tuple[int, str], ...], map_fds: dict[str, int]) -> bytes:
    out = bytearray(insns)
    for index, name in relocations:
        struct.pack_into("=i", out, index * _INSN + 4, map_fds[name])
    return bytes(out)


# --- the record on disk -------------------------------------------------------------------
def encode(program: CompiledProgram) -> str:
    return json.dumps({
        "format": FORMAT,
        "maps": [[m.name, m.map_type, m.key_size, m.value_size, m.max_entries, m.flags] for m in program.maps],
        "programs": [{"name": p.name, "type": p.prog_type, "license": p.license,
                      "insns": base64.b64encode(p.insns).decode(), "relocations": [list(r) for r in p.relocations]}
                     for p in program.programs],
    })


def decode(text: str) -> CompiledProgram:
    """ValueError (or KeyError/TypeError) on anything that is not a record of this format."""
    raw = json.loads(text)
    if raw.get("format") != FORMAT:
        raise ValueError(f"record format {raw.get('format')!r}, expected {FORMAT}")
    maps = tuple(MapSpec(str(n), int(t), int(k), int(v), int(e), int(f)) for n, t, k, v, e, f in raw["maps"])
    programs = tuple(ProgramSpec(str(p["name"]), int(p["type"]), str(p["license"]), base64.b64decode(p["insns"]),
                                 tuple((int(i), str(n)) for i, n in p["relocations"]))
                     for p in raw["programs"])
    names = {m.name for m in maps}
    if not names >= set(MAPS) or not {p.name for p in programs} >= set(PROGRAMS):
        raise ValueError("the record lacks maps or programs the agent drives")
    if any(n not in names for p in programs for _i, n in p.relocations):
        raise ValueError("a relocation names a map the record does not create")
    return CompiledProgram(maps, programs)


def read_record(path: Path) -> CompiledProgram | None:
    """The record at ``path``, or None when absent, unsafe to trust, or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            info = os.fstat(f.fileno())
            if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("ignoring %s: not owned by this user or writable by others", path)
                return None
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    try:
        return decode(text)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the compiled-program record %s: %s", path, exc)
        return None


def write_record(path: Path, program: CompiledProgram) -> None:
    """Atomically, mode 0600, in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(encode(program))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# --- load ---------------------------------------------------------------------------------
def load_record(program: CompiledProgram) -> LoadedFds:
    """Create the maps and load the programs; OSError (nothing left open) when the kernel refuses."""
    loaded = LoadedFds()
    try:
        fds: dict[str, int] = {}
        for m in program.maps:
            fds[m.name] = bpf_sys.map_create(map_type=m.map_type, key_size=m.key_size, value_size=m.value_size,
                                             max_entries=m.max_entries, flags=m.flags, name=m.name)
            loaded.maps[m.name] = MapFd(fds[m.name], m.key_size, m.value_size, m.max_entries)
        for p in program.programs:
            loaded.programs[p.name] = bpf_sys.prog_load(prog_type=p.prog_type, insns=patch(p.insns, p.relocations, fds),
                                                        license=p.license, name=p.name,
                                                        log_size=_VERIFIER_LOG_BYTES)
    except BaseException:
        loaded.close()
        raise
    return loaded


def load(options: LoadOptions, cache_dir: Path) -> LoadedFds:
    """From the record for these options and this kernel when there is one the kernel takes,
    else from the compiling helper (which writes the record)."""
    path = cache_file(options, cache_dir)
    program = read_record(path)
    if program is not None:
        try:
            return load_record(program)
        except OSError as exc:
            log.warning("the compiled-program record %s was refused (%s); compiling again", path, exc)
            path.unlink(missing_ok=True)
    return load_in_helper(options, record_path=str(path))


def describe_map(name: str, fd: int) -> MapSpec:
    map_type, _id, key_size, value_size, max_entries, flags, _name = _MAP_INFO.unpack(
        bpf_sys.obj_info(fd, _MAP_INFO.size))
    return MapSpec(name, map_type, key_size, value_size, max_entries, flags)


def describe_program(name: str, fd: int, license: str, insns: bytes, map_names: dict[int, str]) -> ProgramSpec:
    (prog_type,) = struct.unpack_from("=I", bpf_sys.obj_info(fd, 4))
    return ProgramSpec(name, prog_type, license, insns, find_relocations(insns, map_names))
