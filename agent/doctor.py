"""``hostflame doctor``: per binary, how well its sampled frames are named, and why not.

In: a sampling duration and optionally one pid. Out: a table on stdout - per binary (and the
kernel, JIT code, unknown addresses) the frames seen (sample-weighted, one per sampled
address), the % named and the % with a source line, then the cause and the fix for a
binary short of either (``symbolizer.diagnose``; the Debian package that owns the file, when
dpkg knows it, is named in the fix).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from agent.errors import EXIT_OK
from agent.model import FrameKind, Profile
from symbolizer.diagnose import DEBUG_FIX, Diagnosis, diagnose_binary, diagnose_jit

KERNEL = "[kernel]"
JIT = "[jit]"
UNKNOWN = "[unknown]"


@dataclass
class Health:
    frames: int = 0
    named: int = 0
    lined: int = 0
    pid: int = 0  # one process that mapped it (to look at its file through /proc/PID/root)


def frame_health(profile: Profile) -> dict[str, Health]:
    """Sample-weighted frame counts per binary path (or KERNEL / JIT / UNKNOWN)."""
    out: dict[str, Health] = {}
    for sample in profile.samples:
        pid = dict(sample.num_labels).get("pid", 0)
        for sym in sample.stack:
            if sym.kind is FrameKind.KERNEL:
                key = KERNEL
            elif sym.kind is FrameKind.JIT:
                key = JIT
            elif sym.module is None or not sym.module.path:
                key = UNKNOWN
            else:
                key = sym.module.path
            health = out.setdefault(key, Health(pid=pid))
            health.frames += sample.count
            health.named += sample.count if sym.named else 0
            health.lined += sample.count if any(frame.line for frame in sym.frames) else 0
    return out


def diagnosis_of(key: str, health: Health, proc_root: str = "/proc") -> Diagnosis | None:
    if key == KERNEL:
        return None  # kernel frames have names (kallsyms), never lines
    if key == JIT:
        return diagnose_jit(health.named > 0)
    if key == UNKNOWN:
        return Diagnosis(False, False, b"", "address outside every mapping (a stack unwound through code "
                         "without frame pointers)", "rebuild with -fno-omit-frame-pointer")
    if not key.startswith("/"):
        return None  # [vdso] and the like
    root = f"{proc_root}/{health.pid}/root" if health.pid and os.path.isdir(f"{proc_root}/{health.pid}/root") else "/"
    return diagnose_binary(key, root)


def debian_package(path: str) -> str:
    """The Debian package owning ``path`` on the host (also as /lib... for merged /usr), "" when none."""
    candidates = [path] + ([path.removeprefix("/usr")] if path.startswith("/usr/lib") else [])
    for candidate in candidates:
        try:
            out = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, timeout=5,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].strip()
    return ""


def format_report(health: dict[str, Health], proc_root: str = "/proc") -> str:
    rows = ["frames   named   lines  binary", ""]
    notes = []
    for key, h in sorted(health.items(), key=lambda item: -item[1].frames):
        named, lined = 100 * h.named / h.frames, 100 * h.lined / h.frames
        rows.append(f"{h.frames:6d}  {named:5.1f}%  {lined:5.1f}%  {key}")
        if key == KERNEL or (h.named == h.frames and h.lined == h.frames):
            continue
        diagnosis = diagnosis_of(key, h, proc_root)
        if diagnosis is None or not diagnosis.cause:
            continue
        fix = diagnosis.fix
        package = debian_package(key) if key.startswith("/") and fix == DEBUG_FIX else ""
        if package:
            fix = (f"apt-get install {package}-dbgsym (from the debian-debug archive) or {package}-dbg, "
                   "or set DEBUGINFOD_URLS=https://debuginfod.debian.net")
        notes.append(f"{key}: {diagnosis.cause} -- fix: {fix}")
    return "\n".join(rows + ([""] + notes if notes else [])) + "\n"


def doctor(duration_s: float, frequency_hz: int, pids: tuple[int, ...]) -> int:
    from agent.recorder import sample_profile

    profile, _, _ = sample_profile(frequency_hz, pids, duration_s)
    print(format_report(frame_health(profile)), end="")
    return EXIT_OK
