"""Metadata stage: what is known about the process behind a sample, as ``__meta_*`` labels.

In: an ``agent.model.ProcessInfo`` (and the host name). Out: a ``dict[str, str]`` of discovered
labels, every name starting with ``__meta_``. Providers are small objects with one method,
``discover``; ``default_providers`` lists the built-in ones (process, container with names from
podman's/docker's files, systemd, and Kubernetes pods when configured or running in a pod).

Label names (documented in the README and packaging/hostflame.example.toml):
``__meta_host``, ``__meta_process_pid``, ``__meta_process_comm``, ``__meta_process_exe``,
``__meta_process_exe_name``, ``__meta_process_cmdline``, ``__meta_process_cgroup``,
``__meta_container_id``, ``__meta_container_runtime``, ``__meta_container_name`` (when the
runtime's files name it), ``__meta_systemd_unit``, ``__meta_systemd_slice``, and the
``__meta_kubernetes_*`` labels of ``agent.metadata.kubernetes``.
"""

from __future__ import annotations

from typing import Protocol

from agent.config import KubernetesConfig
from agent.metadata.container import ContainerProvider
from agent.metadata.process import ProcessProvider
from agent.metadata.systemd import SystemdProvider, unit_from_cgroup
from agent.model import ProcessInfo

__all__ = ["MetadataProvider", "default_providers", "discover", "observe", "unit_from_cgroup"]


class MetadataProvider(Protocol):
    """Adds ``__meta_*`` labels for one process; must be cheap (called once per process per interval).
    A provider may also have ``observe(info)``: called when the process is first snapshotted, while
    it still runs, to remember what may be gone by the end of the interval (a ``--rm`` container)."""

    def discover(self, info: ProcessInfo) -> dict[str, str]: ...


def default_providers(kubernetes: KubernetesConfig | None = None) -> list[MetadataProvider]:
    providers: list[MetadataProvider] = [ProcessProvider(), ContainerProvider(), SystemdProvider()]
    if kubernetes is not None and kubernetes.enabled:
        from agent.metadata.kubernetes import KubernetesProvider

        providers.append(KubernetesProvider(kubernetes))
    return providers


def observe(info: ProcessInfo, providers: list[MetadataProvider]) -> None:
    """Let every provider with an ``observe`` hook see a freshly snapshotted process."""
    for provider in providers:
        hook = getattr(provider, "observe", None)
        if hook is not None:
            hook(info)


def discover(info: ProcessInfo, host: str, providers: list[MetadataProvider]) -> dict[str, str]:
    """Every provider's labels for ``info``; a later provider wins on a shared name."""
    labels = {"__meta_host": host}
    for provider in providers:
        labels.update(provider.discover(info))
    return labels
