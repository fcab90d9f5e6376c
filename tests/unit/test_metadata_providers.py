"""Container names from runtime files on disk, and Kubernetes pod metadata from a PodList."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import KubernetesConfig
from agent.labels import Targeter
from agent.metadata import ProcessProvider, SystemdProvider
from agent.metadata.container import ContainerNames, ContainerProvider
from agent.metadata.kubernetes import KubernetesProvider, pod_containers
from agent.model import ProcessInfo
from agent.settings import load_run_config
from tests.profile_factory import APP, make_profile, sym

A = "a" * 64
B = "b" * 64
UID = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"
CGROUP = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice"
          f"/cri-containerd-{A}.scope")


def info(container_id: str, cgroup: str = "", pid: int = 7) -> ProcessInfo:
    return ProcessInfo(pid=pid, incarnation=1, start_time_ticks=1, comm="app", exe="/app", cmdline=("/app",),
                       cgroup=cgroup or f"/libpod_parent/libpod-{container_id}", container_id=container_id,
                       mappings=(APP,))


def test_podman_names_come_from_containers_json_and_are_kept_after_removal(tmp_path: Path) -> None:
    # GIVEN containers/storage's containers.json naming container A
    store = tmp_path / "var/lib/containers/storage/overlay-containers"
    store.mkdir(parents=True)
    (store / "containers.json").write_text(json.dumps([{"id": A, "names": ["web-1"], "layer": "x"}]))
    names = ContainerNames(tmp_path)
    assert names.name(A) == "web-1" and names.name(B) == ""
    # WHEN A is removed and B appears THEN both are known (A from memory)
    (store / "containers.json").write_text(json.dumps([{"id": B, "names": ["web-2"]}]))
    assert names.name(B) == "web-2" and names.name(A) == "web-1"


def test_docker_names_come_from_config_v2_json(tmp_path: Path) -> None:
    cfg = tmp_path / "var/lib/docker/containers" / A
    cfg.mkdir(parents=True)
    (cfg / "config.v2.json").write_text(json.dumps({"ID": A, "Name": "/redis"}))
    provider = ContainerProvider(ContainerNames(tmp_path))
    assert provider.discover(info(A, f"/system.slice/docker-{A}.scope")) == {
        "__meta_container_id": A, "__meta_container_runtime": "docker", "__meta_container_name": "redis"}
    assert "__meta_container_name" not in provider.discover(info(B, f"/docker/{B}"))
    assert ContainerNames(tmp_path).name("../../etc") == ""


def pod(name: str, uid: str, containers: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": uid, **meta},
        "spec": {"nodeName": "node-1"},
        "status": {"containerStatuses": [{"name": n, "containerID": f"containerd://{cid}"}
                                         for n, cid in containers.items()]},
    }


DOC = {"kind": "PodList", "items": [
    pod("api-7d4b9c-xk2p4", UID, {"api": A},
        labels={"app": "api", "pod-template-hash": "7d4b9c", "secret": "no"},
        annotations={"pyroscope.io/service_name": "checkout", "other": "no"},
        ownerReferences=[{"kind": "ReplicaSet", "name": "api-7d4b9c", "controller": True}]),
    pod("db-0", "1111-2222", {"db": B}, ownerReferences=[{"kind": "StatefulSet", "name": "db", "controller": True}]),
]}


def test_pod_list_gives_labels_per_container_with_owner_and_allow_lists() -> None:
    by_id = {pc.container_id: dict(pc.labels) for pc in pod_containers(DOC, ["app"], [])}
    assert by_id[A] == {
        "__meta_kubernetes_namespace": "shop", "__meta_kubernetes_pod_name": "api-7d4b9c-xk2p4",
        "__meta_kubernetes_pod_uid": UID, "__meta_kubernetes_pod_node_name": "node-1",
        "__meta_kubernetes_pod_controller_kind": "Deployment", "__meta_kubernetes_pod_controller_name": "api",
        "__meta_kubernetes_pod_label_app": "api",
        "__meta_kubernetes_pod_annotation_pyroscope_io_service_name": "checkout",
        "__meta_kubernetes_pod_container_name": "api"}
    assert by_id[B]["__meta_kubernetes_pod_controller_kind"] == "StatefulSet"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unknown_container_refreshes_at_most_once_per_period_and_failures_back_off() -> None:
    docs: list[dict[str, Any]] = [{"items": []}]
    calls = []

    def fetch() -> dict[str, Any]:
        calls.append(1)
        if isinstance(docs[-1], Exception):
            raise docs[-1]
        return docs[-1]

    clock = Clock()
    provider = KubernetesProvider(KubernetesConfig(kubelet_url="https://x", refresh_min_s=10), fetch, clock)
    # GIVEN no pods yet: the first unknown id refreshes, the next one within 10 s does not
    assert provider.discover(info(A, CGROUP)) == {} and len(calls) == 1
    docs.append(DOC)
    assert provider.discover(info(A, CGROUP)) == {} and len(calls) == 1
    # WHEN the period passed THEN an unknown id refreshes and finds its pod
    clock.now += 10
    assert provider.discover(info(A, CGROUP))["__meta_kubernetes_pod_name"] == "api-7d4b9c-xk2p4"
    assert provider.discover(info(B, f"/kubepods/besteffort/pod1111-2222/{B}"))["__meta_kubernetes_pod_name"] == "db-0"
    assert len(calls) == 2
    # AND an unknown container of a known pod still gets the pod's labels (not the container's)
    other = provider.discover(info("c" * 64, CGROUP.replace(A, "c" * 64)))
    assert len(calls) == 2 and other["__meta_kubernetes_pod_name"] == "api-7d4b9c-xk2p4"
    assert "__meta_kubernetes_pod_container_name" not in other
    # AND when the source fails, known containers keep their labels and retries back off
    docs.append(OSError("connection refused"))  # type: ignore[arg-type]
    clock.now += 10
    provider.discover(info("d" * 64))
    clock.now += 15
    provider.discover(info("d" * 64))
    assert len(calls) == 4
    clock.now += 15  # backoff doubled to 20 s
    provider.discover(info("d" * 64))
    assert len(calls) == 4
    assert provider.discover(info(A, CGROUP))["__meta_kubernetes_pod_container_name"] == "api"


def test_targets_of_pods_carry_namespace_pod_container_node_and_service_name() -> None:
    provider = KubernetesProvider(KubernetesConfig(kubelet_url="https://x"), lambda: DOC, Clock())
    targeter = Targeter(providers=[ProcessProvider(), ContainerProvider(ContainerNames(Path("/nonexistent"))),
                                   SystemdProvider(), provider])
    profile = make_profile(*(s for s in _samples()))
    labels = {t.key: dict(t.labels) for t in targeter.split(profile).targets}
    assert labels[f"container:{A}"] == {"service_name": "checkout", "host": "node-1", "container_id": A,
                                        "namespace": "shop", "pod": "api-7d4b9c-xk2p4", "container": "api",
                                        "node": "node-1"}
    assert labels[f"container:{B}"]["service_name"] == "shop/db"


def _samples() -> list[Any]:
    from agent.model import ProfileSample

    return [ProfileSample((sym(0x401000, APP, "main"),), 3, (("comm", "app"),), (("pid", pid),), info(cid, cg, pid))
            for pid, cid, cg in ((7, A, CGROUP), (8, B, f"/kubepods/besteffort/pod1111-2222/{B}"))]


def test_kubernetes_settings_default_from_the_pod_environment(tmp_path: Path) -> None:
    env = {"NODE_NAME": "node-1", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = load_run_config(None, env, {})
    assert config.kubernetes.enabled and config.kubernetes.node_name == "node-1"
    assert config.kubernetes.api_url == "https://10.0.0.1:443"
    assert not load_run_config(None, {}, {}).kubernetes.enabled
    toml = tmp_path / "c.toml"
    toml.write_text('[kubernetes]\nkubelet_url = "https://127.0.0.1:10250"\nlabel_allowlist = "app, team"\n')
    config = load_run_config(toml, {}, {})
    assert config.kubernetes.kubelet_url == "https://127.0.0.1:10250"
    assert config.kubernetes.label_allowlist == ("app", "team")


@pytest.mark.parametrize(("cgroup", "uid"), [
    (CGROUP, UID),
    (f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{A}.scope", UID),  # guaranteed QoS
    (f"/kubepods/burstable/pod{UID}/{A}", UID),
    (f"/kubepods/pod{UID}/{A}", UID),
    (f"/libpod_parent/libpod-{A}", ""),
    ("/system.slice/kubelet.service", ""),
])
def test_pod_uid_from_cgroup_paths(cgroup: str, uid: str) -> None:
    from agent.procfs import pod_uid_from_cgroup

    assert pod_uid_from_cgroup(cgroup) == uid
