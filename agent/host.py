"""Host preparation before BPF is loaded: kernel headers for bcc, tracefs and debugfs.

In: the running kernel's release, the filesystem (paths injectable for tests).
Out: a ``HeadersChoice`` naming the tree bcc compiles against, mounts made when absent.
Nothing here imports bcc; the loader calls these before it does (bcc reads tracefs paths
when it is imported).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EnvironmentProblem

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS = Path("/sys/kernel/debug")


@dataclass(frozen=True)
class HeadersChoice:
    """Where bcc finds kernel headers. ``source_dir`` None means bcc's own default."""

    kind: str  # "modules-build", "kheaders", "distro", or "none"
    source_dir: Path | None
    detail: str

    @property
    def found(self) -> bool:
        return self.kind != "none"


def default_cache_dir() -> Path:
    env = os.environ.get("HOSTFLAME_CACHE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/hostflame")
    return Path.home() / ".cache" / "hostflame"


def find_kernel_headers(
    release: str | None = None,
    *,
    modules_root: Path = Path("/lib/modules"),
    kheaders_archive: Path = Path("/sys/kernel/kheaders.tar.xz"),
    src_root: Path = Path("/usr/src"),
    cache_dir: Path | None = None,
    prepare: bool = True,
) -> HeadersChoice:
    """Pick kernel headers in the documented order, building a merged tree when needed.

    1. ``/lib/modules/RELEASE/build``; 2. ``/sys/kernel/kheaders.tar.xz`` (unpacked into the
    cache); 3. the newest installed distro ``linux-headers-*`` pair merged into one tree in the
    cache. Nothing is ever written under ``/lib/modules``. With ``prepare=False`` nothing is
    written at all (for ``hostflame check``).
    """
    release = release or os.uname().release
    cache_dir = cache_dir or default_cache_dir()
    build = modules_root / release / "build"
    if (build / "include").is_dir():
        return HeadersChoice("modules-build", None, str(build))
    if kheaders_archive.is_file():
        target = cache_dir / "kernel-headers" / f"kheaders-{release}"
        if prepare:
            _unpack_kheaders(kheaders_archive, target)
        return HeadersChoice("kheaders", target, f"{kheaders_archive} unpacked in {target}")
    pair = newest_distro_headers(src_root)
    if pair is not None:
        common, arch = pair
        target = cache_dir / "kernel-headers" / arch.name
        if prepare:
            _merge_trees(common, arch, target)
        return HeadersChoice("distro", target, f"{common.name} + {arch.name} merged in {target}")
    return HeadersChoice("none", None, "no kernel headers found")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def newest_distro_headers(src_root: Path) -> tuple[Path, Path] | None:
    """The newest ``linux-headers-V-ARCH`` directory with its ``linux-headers-V-common`` twin."""
    if not src_root.is_dir():
        return None
    arch_dirs = [
        p for p in src_root.glob("linux-headers-*")
        if p.is_dir() and not p.name.endswith("-common") and (p / "include").is_dir()
    ]
    for arch in sorted(arch_dirs, key=lambda p: _version_key(p.name), reverse=True):
        version = re.sub(r"-[a-z0-9_]+$", "", arch.name.removeprefix("linux-headers-"))
        common = src_root / f"linux-headers-{version}-common"
        if common.is_dir():
            return common, arch
        return arch, arch  # a self-contained tree (other distros)
    return None


def _merge_trees(common: Path, arch: Path, target: Path) -> None:
    """Symlink both trees into one (arch files win), atomically and once."""
    stamp = target / ".hostflame-complete"
    if stamp.exists():
        return
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for tree in (common, arch) if common != arch else (arch,):
        result = subprocess.run(
            ["cp", "-rsf", f"{tree}/.", f"{staging}/"], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EnvironmentProblem(
                f"cannot merge kernel headers into {staging}: {result.stderr.strip()}; "
                "set HOSTFLAME_CACHE_DIR to a writable directory"
            )
    (staging / ".hostflame-complete").write_text(f"{common}\n{arch}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _unpack_kheaders(archive: Path, target: Path) -> None:
    stamp = target / ".hostflame-complete"
    if stamp.exists():
        return
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    (staging / ".hostflame-complete").write_text(str(archive))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def is_mounted(path: Path, fstype: str, mounts_file: Path = Path("/proc/self/mounts")) -> bool:
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == str(path) and fields[2] == fstype:
            return True
    return False


def ensure_tracefs() -> None:
    """Mount tracefs (and debugfs, which older bcc reads tracepoints through) when absent."""
    for path, fstype in ((TRACEFS, "tracefs"), (DEBUGFS, "debugfs")):
        if is_mounted(path, fstype) or (path / "events").is_dir() or (path / "tracing").is_dir():
            continue
        result = subprocess.run(
            ["mount", "-t", fstype, fstype, str(path)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 and fstype == "tracefs":
            raise EnvironmentProblem(
                f"cannot mount tracefs at {path}: {result.stderr.strip() or 'mount failed'}; "
                f"mount it yourself: mount -t tracefs tracefs {path}"
            )
        if result.returncode == 0:
            log.info("mounted %s at %s", fstype, path)
