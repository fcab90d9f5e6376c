"""Container metadata: ``__meta_container_id`` and ``__meta_container_runtime`` from the cgroup
path, and ``__meta_container_name`` from the runtime's state on disk (no daemon call).

Names come from
- podman / cri-o / buildah (containers/storage): ``ROOT/var/lib/containers/storage/*-containers/containers.json``,
  a list of ``{"id", "names"}``, re-read when its modification time changes;
- docker: ``ROOT/var/lib/docker/containers/<id>/config.v2.json``, its ``Name`` without the ``/``.
A name once found is kept for the agent's life, and the daemon looks names up when a process is
first snapshotted (``observe``), so a container removed since (``--rm``) keeps its name for the
interval it ran in. Unknown: no name label (service_name then uses the short id).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from agent.model import ProcessInfo
from agent.procfs import container_from_cgroup

__all__ = ["ContainerNames", "ContainerProvider"]

log = logging.getLogger(__name__)

STORAGE_DIR = "var/lib/containers/storage"
DOCKER_DIR = "var/lib/docker/containers"
MAX_NAMES = 20_000


def _load_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class ContainerNames:
    """Container id -> name from podman's and docker's files under ``root``."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self._names: dict[str, str] = {}
        self._storage_mtimes: dict[Path, int] = {}

    def name(self, container_id: str) -> str:
        if container_id in self._names:
            return self._names[container_id]
        self._read_storage()
        if container_id not in self._names:
            self._read_docker(container_id)
        return self._names.get(container_id, "")

    def _remember(self, container_id: str, name: str) -> None:
        if len(self._names) >= MAX_NAMES:
            del self._names[next(iter(self._names))]
        self._names[container_id] = name

    def _read_storage(self) -> None:
        for path in (self.root / STORAGE_DIR).glob("*-containers/containers.json"):
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if self._storage_mtimes.get(path) == mtime:
                continue
            self._storage_mtimes[path] = mtime
            entries = _load_json(path)
            if not isinstance(entries, list):
                continue
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                names = entry.get("names")
                cid = entry.get("id")
                if isinstance(cid, str) and isinstance(names, list) and names and isinstance(names[0], str):
                    self._remember(cid, names[0])

    def _read_docker(self, container_id: str) -> None:
        if not container_id.isalnum():  # never a path component that walks elsewhere
            return
        config = _load_json(self.root / DOCKER_DIR / container_id / "config.v2.json")
        if isinstance(config, dict) and isinstance(config.get("Name"), str) and config["Name"].strip("/"):
            self._remember(container_id, config["Name"].strip("/"))


class ContainerProvider:
    def __init__(self, names: ContainerNames | None = None) -> None:
        self.names = names if names is not None else ContainerNames()

    def observe(self, info: ProcessInfo) -> None:
        """Look the name up while the container runs (its files go when it is removed)."""
        if info.container_id:
            self.names.name(info.container_id)

    def discover(self, info: ProcessInfo) -> dict[str, str]:
        if not info.container_id:
            return {}
        ref = container_from_cgroup(info.cgroup)
        labels = {"__meta_container_id": info.container_id}
        if ref is not None:
            labels["__meta_container_runtime"] = ref.runtime
        name = self.names.name(info.container_id)
        if name:
            labels["__meta_container_name"] = name
        return labels
