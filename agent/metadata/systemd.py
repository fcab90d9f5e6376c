"""systemd metadata from the cgroup path: the innermost ``*.service`` unit and its slice.

``/system.slice/nginx.service`` gives unit ``nginx.service``, slice ``system.slice``;
``/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service`` gives ``foo.service``.
Scopes (``session-3.scope``, container scopes) are not services and give nothing.
"""

from __future__ import annotations

from agent.model import ProcessInfo


def unit_from_cgroup(path: str) -> tuple[str, str]:
    """(unit, slice) of the innermost service in a cgroup path; ("", "") when there is none."""
    unit = unit_slice = last_slice = ""
    for part in path.split("/"):
        if part.endswith(".service"):
            unit, unit_slice = part, last_slice
        elif part.endswith(".slice"):
            last_slice = part
    return unit, unit_slice


class SystemdProvider:
    def discover(self, info: ProcessInfo) -> dict[str, str]:
        if info.container_id:
            return {}
        unit, slice_ = unit_from_cgroup(info.cgroup)
        if not unit:
            return {}
        return {"__meta_systemd_unit": unit, "__meta_systemd_slice": slice_}
