"""Pod metadata end to end: real processes in cgroups named the way the kubelet and containerd
name them, a fake kubelet (TLS, test CA, bearer token) listing those pods, `hostflame run`
pushing to a fake Pyroscope: each container's series carries its pod's labels."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_backend import decode_push, fake_server
from tests.fake_kubelet import fake_kubelet, make_ca
from tests.integration.conftest import HOSTFLAME, pprof_traces, stop_with_sigterm

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.slow]

CGROUP_V2 = Path("/sys/fs/cgroup/unified")
NODE = "test-node-1"


def pod_document(pods: list[dict[str, str]]) -> dict[str, Any]:
    items = []
    for p in pods:
        annotations = {"pyroscope.io/service_name": p["service"]} if p.get("service") else {}
        items.append({
            "metadata": {"name": p["name"], "namespace": p["namespace"], "uid": p["uid"],
                         "labels": {"app": p["container"], "pod-template-hash": "5f7d8"},
                         "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": p["container"] + "-5f7d8", "uid": str(uuid.uuid4()),
                                              "controller": True}]},
            "spec": {"nodeName": NODE, "containers": [{"name": p["container"], "image": "x"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": p["container"], "containerID": f"containerd://{p['cid']}", "ready": True,
                 "restartCount": 0, "image": "x", "imageID": "x"}]},
        })
    return {"kind": "PodList", "apiVersion": "v1", "items": items}


@pytest.fixture
def pods(split_exe: Path) -> Iterator[list[dict[str, str]]]:
    """Two pods, each a real process in a kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope cgroup."""
    if not (CGROUP_V2 / "cgroup.procs").exists():
        pytest.fail(f"no cgroup v2 hierarchy at {CGROUP_V2}")
    made: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    specs = [{"name": "checkout-5f7d8-abcde", "namespace": "shop", "container": "api", "service": "checkout-api"},
             {"name": "worker-5f7d8-fghij", "namespace": "batch", "container": "crunch", "service": ""}]
    try:
        for spec in specs:
            spec["uid"] = str(uuid.uuid4())
            spec["cid"] = secrets.token_hex(32)
            pod_slice = CGROUP_V2 / "kubepods.slice" / f"kubepods-burstable-pod{spec['uid'].replace('-', '_')}.slice"
            scope = pod_slice / f"cri-containerd-{spec['cid']}.scope"
            scope.mkdir(parents=True)
            made[:0] = [scope, pod_slice]
            proc = subprocess.Popen([str(split_exe), "60"])
            procs.append(proc)
            (scope / "cgroup.procs").write_text(str(proc.pid))
            spec["pid"] = str(proc.pid)
            assert f"cri-containerd-{spec['cid']}.scope" in Path(f"/proc/{proc.pid}/cgroup").read_text()
        yield specs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        time.sleep(0.2)
        for path in [*made, CGROUP_V2 / "kubepods.slice"]:
            try:
                path.rmdir()
            except OSError:
                pass


@pytest.mark.parametrize("source", ["kubelet", "apiserver"])
def test_container_series_carry_their_pods_labels(source: str, pods: list[dict[str, str]], tmp_path: Path,
                                                  pprof_tool: Path) -> None:
    ca = make_ca(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("test-token-" + secrets.token_hex(8) + "\n")
    document = pod_document(pods)
    if source == "apiserver":  # the API server knows other nodes' pods too; the field selector leaves them out
        other = pod_document([{**pods[0], "name": "elsewhere", "namespace": "other"}])["items"][0]
        other["spec"]["nodeName"] = "another-node"
        document["items"].append(other)  # same container id, listed last: it would win if not filtered
    with fake_kubelet(ca, document, token_file.read_text().strip()) as kubelet, fake_server() as pyro:
        # GIVEN the daemon told where the kubelet (or the API server) is, with the test CA and the token
        port = kubelet.url.rsplit(":", 1)[1]
        where = ({"HOSTFLAME_KUBERNETES_KUBELET_URL": kubelet.url} if source == "kubelet"
                 else {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port})
        env = {**os.environ, "NODE_NAME": NODE, **where,
               "HOSTFLAME_KUBERNETES_CA_FILE": str(ca.ca_file), "HOSTFLAME_KUBERNETES_TOKEN_FILE": str(token_file)}
        started = time.monotonic()
        daemon = subprocess.Popen([str(HOSTFLAME), "run", "--interval", "2", "--pyroscope-url", pyro.url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            def series_of(cid: str) -> list[Any]:
                return [s for r in list(pyro.requests) for s in decode_push(r.body)
                        if s.labels.get("container_id") == cid]

            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not all(len(series_of(p["cid"])) >= 2 for p in pods):
                assert daemon.poll() is None, daemon.communicate()[1]
                time.sleep(0.3)
        finally:
            err, _ = stop_with_sigterm(daemon)
            ran_s = time.monotonic() - started
    assert all(series_of(p["cid"]) for p in pods), err
    # THEN each container is its own target labelled with its pod, namespace, container and node
    for p in pods:
        series = series_of(p["cid"])
        expected_service = p["service"] or f"{p['namespace']}/{p['container']}"
        for s in series:
            assert {k: s.labels.get(k) for k in ("namespace", "pod", "container", "node", "service_name")} == {
                "namespace": p["namespace"], "pod": p["name"], "container": p["container"], "node": NODE,
                "service_name": expected_service}, s.labels
        # AND its profiles hold the workload's own samples (Google pprof reads them)
        path = tmp_path / f"{p['container']}.pb.gz"
        path.write_bytes(series[-1].profiles[0])
        traces = pprof_traces(pprof_tool, path)
        assert traces and all(t.labels.get("pid") == [p["pid"]] for t in traces)
    # AND the kubelet (API server) was asked with the token, over TLS verified against the test CA
    assert kubelet.requests and all(auth == "Bearer " + token_file.read_text().strip() for _, auth in kubelet.requests)
    expected_path = "/pods" if source == "kubelet" else f"/api/v1/pods?fieldSelector=spec.nodeName={NODE}"
    assert {path for path, _ in kubelet.requests} == {expected_path}
    # AND it was refreshed on unknown container ids at most once per refresh_min_s (10 s), not per sample
    assert len(kubelet.requests) <= 1 + ran_s / 10, (kubelet.requests, ran_s)


def test_unreachable_kubelet_is_harmless(pods: list[dict[str, str]], tmp_path: Path) -> None:
    # GIVEN processes in pod cgroups and a kubelet URL where nothing listens
    from tests.fake_backend import free_port

    export = tmp_path / "profiles"
    env = {**os.environ, "NODE_NAME": NODE, "HOSTFLAME_KUBERNETES_KUBELET_URL": f"https://127.0.0.1:{free_port()}",
           "HOSTFLAME_KUBERNETES_TIMEOUT_S": "1"}
    # WHEN the daemon runs two intervals
    result = subprocess.run([str(HOSTFLAME), "run", "--interval", "1", "--duration", "3", "--export-dir", str(export)],
                            capture_output=True, text=True, timeout=120, env=env, check=False)
    # THEN it exits 0 with the containers' profiles written (named by their short ids), and says
    # once that pod labels are missing
    assert result.returncode == 0, result.stderr
    for p in pods:
        assert list(export.glob(f"hostflame-*-{p['cid'][:12]}*.pb.gz")), sorted(export.iterdir())
    assert result.stderr.count("kubernetes metadata unavailable") == 1, result.stderr
