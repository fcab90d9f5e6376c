"""Container metadata from the cgroup path: ``__meta_container_id`` and ``__meta_container_runtime``.

The container's name is not in the cgroup path; a runtime-aware provider may add
``__meta_container_name`` later (service_name prefers it when present).
"""

from __future__ import annotations

from agent.model import ProcessInfo
from agent.procfs import container_from_cgroup


class ContainerProvider:
    def discover(self, info: ProcessInfo) -> dict[str, str]:
        if not info.container_id:
            return {}
        ref = container_from_cgroup(info.cgroup)
        labels = {"__meta_container_id": info.container_id}
        if ref is not None:
            labels["__meta_container_runtime"] = ref.runtime
        return labels
