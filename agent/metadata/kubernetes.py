"""Kubernetes metadata: the pod, namespace and container behind a container id.

In: a ``ProcessInfo`` whose cgroup names a container (and usually a pod uid). Out:
``__meta_kubernetes_*`` labels, Prometheus' names: ``namespace``, ``pod_name``, ``pod_uid``,
``pod_container_name``, ``pod_node_name``, ``pod_controller_kind``/``_name`` (a ReplicaSet is
reported as its Deployment when the pod's ``pod-template-hash`` label says so), and the pod's
labels and annotations that are allow-listed, as ``pod_label_<name>`` / ``pod_annotation_<name>``
(non-alphanumerics as ``_``). ``pyroscope.io/service_name`` is always kept.

The pods of this node come from the kubelet (``GET {kubelet_url}/pods``) or the API server
(``GET {api_url}/api/v1/pods?fieldSelector=spec.nodeName=NODE``), with the service account's
bearer token and CA. They are cached; an unknown container id triggers a refresh, at most one
per ``refresh_min_s``. Entries of deleted pods stay (a container that exited still needs its
labels for the interval). When neither source answers, a warning is logged once, refreshes back
off up to ``MAX_BACKOFF_S``, and processes simply get no Kubernetes labels.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from agent.config import KubernetesConfig
from agent.model import ProcessInfo
from agent.procfs import pod_uid_from_cgroup

__all__ = ["KubernetesProvider", "PodContainer", "pod_containers"]

log = logging.getLogger(__name__)

SERVICE_NAME_ANNOTATION = "pyroscope.io/service_name"
MAX_BACKOFF_S = 300.0
MAX_ENTRIES = 20_000
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class PodContainer:
    """One container of one pod, as labels (``__meta_kubernetes_*``)."""

    container_id: str
    pod_uid: str
    labels: tuple[tuple[str, str], ...]


def _label_name(kind: str, key: str) -> str:
    return f"__meta_kubernetes_pod_{kind}_{_UNSAFE.sub('_', key)}"


def _owner(meta: dict[str, Any]) -> tuple[str, str]:
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if not owner:
        return "", ""
    kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
    template_hash = (meta.get("labels") or {}).get("pod-template-hash", "")
    if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
        return "Deployment", name[: -len(template_hash) - 1]
    return kind, name


def _strip_runtime(container_id: str) -> str:
    """``containerd://abc`` -> ``abc`` (also docker://, cri-o://)."""
    return container_id.partition("://")[2] or container_id


def pod_containers(document: dict[str, Any], labels_allowed: Iterable[str] = (),
                   annotations_allowed: Iterable[str] = ()) -> list[PodContainer]:
    """Every container (init and ephemeral too) with an id in a ``PodList`` document."""
    labels_ok = set(labels_allowed)
    annotations_ok = {*annotations_allowed, SERVICE_NAME_ANNOTATION}
    out = []
    for pod in document.get("items") or []:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        kind, owner_name = _owner(meta)
        common = {
            "__meta_kubernetes_namespace": str(meta.get("namespace", "")),
            "__meta_kubernetes_pod_name": str(meta.get("name", "")),
            "__meta_kubernetes_pod_uid": str(meta.get("uid", "")),
            "__meta_kubernetes_pod_node_name": str(spec.get("nodeName", "")),
            "__meta_kubernetes_pod_controller_kind": kind,
            "__meta_kubernetes_pod_controller_name": owner_name,
        }
        for key, value in (meta.get("labels") or {}).items():
            if key in labels_ok:
                common[_label_name("label", key)] = str(value)
        for key, value in (meta.get("annotations") or {}).items():
            if key in annotations_ok:
                common[_label_name("annotation", key)] = str(value)
        for field in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(field) or []:
                cid = _strip_runtime(str(cs.get("containerID") or ""))
                if not cid:
                    continue
                labels = {**common, "__meta_kubernetes_pod_container_name": str(cs.get("name", ""))}
                out.append(PodContainer(cid, common["__meta_kubernetes_pod_uid"],
                                        tuple((k, v) for k, v in labels.items() if v)))
    return out


Fetcher = Callable[[], dict[str, Any]]


class KubernetesProvider:
    """Pod labels for containers on this node; see the module docstring."""

    def __init__(self, config: KubernetesConfig, fetch: Fetcher | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._fetch = fetch or _http_fetcher(config)
        self._clock = clock
        self._by_container: dict[str, PodContainer] = {}
        self._by_pod: dict[str, tuple[tuple[str, str], ...]] = {}  # pod uid -> pod labels, no container
        self._next_refresh = 0.0
        self._backoff_s = 0.0
        self._warned = False
        self.refreshes = 0
        self.failures = 0

    def discover(self, info: ProcessInfo) -> dict[str, str]:
        if not info.container_id:
            return {}
        found = self._by_container.get(info.container_id)
        if found is None and self._clock() >= self._next_refresh:
            self.refresh()
            found = self._by_container.get(info.container_id)
        if found is not None:
            return dict(found.labels)
        pod_uid = pod_uid_from_cgroup(info.cgroup)
        pod = self._by_pod.get(pod_uid) if pod_uid else None
        return dict(pod) if pod else {}

    def refresh(self) -> None:
        """Fetch the node's pods now; on failure keep the cache and back off."""
        self.refreshes += 1
        try:
            document = self._fetch()
            containers = pod_containers(document, self.config.label_allowlist, self.config.annotation_allowlist)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.failures += 1
            self._backoff_s = min(MAX_BACKOFF_S, max(self.config.refresh_min_s, self._backoff_s * 2))
            self._next_refresh = self._clock() + self._backoff_s
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "kubernetes metadata unavailable (%s): no pod labels; next try in %.0f s",
                    exc, self._backoff_s)
            self._warned = True
            return
        self._backoff_s = 0.0
        self._next_refresh = self._clock() + self.config.refresh_min_s
        for pc in containers:
            self._by_container.pop(pc.container_id, None)  # re-inserted: newest last
            self._by_container[pc.container_id] = pc
            pod_only = tuple((k, v) for k, v in pc.labels if k != "__meta_kubernetes_pod_container_name")
            self._by_pod[pc.pod_uid] = pod_only
        while len(self._by_container) > MAX_ENTRIES:
            del self._by_container[next(iter(self._by_container))]
        while len(self._by_pod) > MAX_ENTRIES:
            del self._by_pod[next(iter(self._by_pod))]


def _http_fetcher(config: KubernetesConfig) -> Fetcher:
    """GET the node's PodList from the kubelet, else from the API server (field selector)."""
    import requests

    if config.kubelet_url:
        url = config.kubelet_url.rstrip("/") + "/pods"
    else:
        selector = quote(f"spec.nodeName={config.node_name}", safe="=")
        url = f"{config.api_url.rstrip('/')}/api/v1/pods?fieldSelector={selector}"
    session = requests.Session()

    def fetch() -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        try:
            with open(config.token_file, encoding="utf-8") as f:  # re-read: projected tokens rotate
                headers["Authorization"] = "Bearer " + f.read().strip()
        except OSError:
            pass
        verify: bool | str = config.ca_file or True
        try:
            response = session.get(url, headers=headers, timeout=config.timeout_s, verify=verify)
        except requests.RequestException as exc:
            raise OSError(f"GET {url}: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise OSError(f"GET {url}: HTTP {response.status_code}")
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"GET {url}: not a PodList")
        return document

    return fetch
