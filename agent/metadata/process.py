"""Process metadata: pid, comm, executable, command line and cgroup as ``__meta_process_*``."""

from __future__ import annotations

import os

from agent.model import ProcessInfo

CMDLINE_MAX = 256  # a label value, not an argv dump


class ProcessProvider:
    def discover(self, info: ProcessInfo) -> dict[str, str]:
        labels = {
            "__meta_process_pid": str(info.pid),
            "__meta_process_comm": info.comm,
            "__meta_process_cgroup": info.cgroup,
            "__meta_process_cmdline": " ".join(info.cmdline)[:CMDLINE_MAX],
        }
        if info.exe:
            labels["__meta_process_exe"] = info.exe
            labels["__meta_process_exe_name"] = os.path.basename(info.exe.removesuffix(" (deleted)"))
        return labels
