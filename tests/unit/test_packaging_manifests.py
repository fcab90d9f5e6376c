"""packaging/kubernetes against the Kubernetes API schema (the `kubernetes` client's models),
the DaemonSet's deployment contract, and packaging/Dockerfile checked structurally (no docker
engine here)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml

from agent.preflight import HELPFUL_CAPS, REQUIRED_CAPS
from agent.settings import load_run_config
from tests.conftest import REPO

MANIFESTS = REPO / "packaging" / "kubernetes"
DOCKERFILE = REPO / "packaging" / "Dockerfile"
CAPS = sorted(c.removeprefix("CAP_") for c in (*REQUIRED_CAPS, *HELPFUL_CAPS))
PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float),
                                           "object": (object,), "datetime": (str,), "bytes": (str,)}


def check(value: Any, kind: str, path: str) -> list[str]:
    """Every schema violation of ``value`` read as the client's type ``kind``: unknown fields,
    wrong primitive types. ``kind`` is an ``openapi_types`` string (``V1PodSpec``, ``List[V1Volume]``,
    ``Dict[str, str]``, ``str``, ...)."""
    if value is None:
        return []
    if m := re.fullmatch(r"List\[(.+)\]", kind):
        if not isinstance(value, list):
            return [f"{path}: want a list, got {value!r}"]
        return [e for i, item in enumerate(value) for e in check(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"Dict\[str, (.+)\]", kind):
        if not isinstance(value, dict):
            return [f"{path}: want a map, got {value!r}"]
        return [e for k, v in value.items() for e in check(v, m.group(1), f"{path}.{k}")]
    if kind in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[kind]) and not (kind == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: want {kind}, got {value!r}"]
    model = getattr(k8s, kind)
    if not isinstance(value, dict):
        return [f"{path}: want a {kind} object, got {value!r}"]
    by_json = {j: attr for attr, j in model.attribute_map.items()}
    errors = []
    for key, sub in value.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: unknown field of {kind}")
        else:
            errors.extend(check(sub, model.openapi_types[by_json[key]], f"{path}.{key}"))
    return errors


def model_name(doc: dict[str, Any]) -> str:
    group_version = doc["apiVersion"].split("/")
    version = group_version[-1].capitalize()
    return f"{version}{doc['kind']}"


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents() if d["kind"] == kind]
    return doc


def test_every_manifest_follows_the_kubernetes_schema() -> None:
    docs = documents()
    assert {d["kind"] for _, d in docs} == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                            "ConfigMap", "DaemonSet"}
    client = k8s.ApiClient()
    for name, doc in docs:
        # GIVEN each document WHEN walked against its model THEN no unknown field, no wrong type
        assert check(doc, model_name(doc), f"{name}:{doc['kind']}") == []
        # AND the client builds it (required fields present, enums valid)
        client._ApiClient__deserialize(doc, model_name(doc))  # type: ignore[attr-defined]


def test_the_schema_check_catches_unknown_and_mistyped_fields() -> None:
    doc = by_kind("DaemonSet")
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["capabilitys"] = {}
    container["resources"]["limits"] = ["1"]
    doc["spec"]["template"]["spec"]["hostPID"] = "yes"
    errors = check(doc, "V1DaemonSet", "ds")
    assert any("capabilitys: unknown field of V1SecurityContext" in e for e in errors), errors
    assert any("resources.limits: want a map" in e for e in errors), errors
    assert any("hostPID: want bool" in e for e in errors), errors
    # AND a missing required field is refused by the client's models
    fresh = by_kind("DaemonSet")
    del fresh["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        k8s.ApiClient()._ApiClient__deserialize(fresh, "V1DaemonSet")  # type: ignore[attr-defined]


def test_daemonset_profiles_every_node_with_capabilities_not_privilege() -> None:
    spec = by_kind("DaemonSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    security = container["securityContext"]
    # GIVEN the pod spec THEN it sees every process, is not privileged, adds exactly the unit's caps
    assert spec["hostPID"] is True and not security.get("privileged")
    assert security["capabilities"]["drop"] == ["ALL"] and sorted(security["capabilities"]["add"]) == CAPS
    unit = (REPO / "packaging/systemd/hostflame.service").read_text()
    unit_caps = re.search(r"^CapabilityBoundingSet=(.+)$", unit, re.M).group(1).split()  # type: ignore[union-attr]
    assert sorted(c.removeprefix("CAP_") for c in unit_caps) == CAPS
    # AND runs on every node, with requests and limits
    assert {"operator": "Exists"} in spec["tolerations"]
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    # AND NODE_NAME comes from spec.nodeName
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # AND the host paths are mounted read-only, the symbol cache writable from the host
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup", "/lib/modules", "/usr/src"):
        assert mounts[path]["readOnly"] is True
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    cache = mounts[env["HOSTFLAME_CACHE_DIR"]["value"]]
    assert not cache.get("readOnly") and volumes[cache["name"]]["hostPath"]["type"] == "DirectoryOrCreate"
    # AND the ServiceAccount it runs as may get/list/watch pods through the binding
    sa = by_kind("ServiceAccount")["metadata"]
    assert spec["serviceAccountName"] == sa["name"]
    binding = by_kind("ClusterRoleBinding")
    assert {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]} in binding["subjects"]
    role = by_kind("ClusterRole")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]} in role["rules"]


def test_configmap_holds_a_valid_config_where_the_daemonset_reads_it(tmp_path: Path) -> None:
    spec = by_kind("DaemonSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    configmap = by_kind("ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    toml = tmp_path / config_path.name
    toml.write_text(configmap["data"][config_path.name])
    # WHEN loaded as the pod would (its environment) THEN it is valid and Kubernetes metadata is on
    env = {"NODE_NAME": "node-1", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = load_run_config(toml, env, {})
    config.validate()
    assert config.kubernetes.enabled and config.pyroscope is not None
    assert str(container["ports"][0]["containerPort"]) == config.metrics_addr.rpartition(":")[2]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, "a continuation line runs off the end"
    return out


def test_dockerfile_is_well_formed_and_builds_hostflame_on_debians_bcc() -> None:
    steps = dockerfile_instructions()
    known = {"FROM", "ARG", "RUN", "COPY", "ENV", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL", "USER"}
    assert {s for s, _ in steps} <= known
    # GIVEN the Dockerfile THEN it starts from a pinned Debian (bcc is built for its python3)
    assert steps[0][0] == "FROM" and re.fullmatch(r"debian:[a-z]+(-slim)?", steps[0][1])
    runs = " ".join(args for s, args in steps if s == "RUN")
    assert "python3-bpfcc" in runs and "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs
    assert "--system-site-packages" in runs
    # AND every COPY source exists in the repository (the build context is its root), and the
    # packages pyproject.toml names are all copied
    copied = set()
    for step, args in steps:
        if step == "COPY":
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"
                copied.add(src)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in copied
    # AND it runs the console script pyproject defines, in exec form, with the DaemonSet's config path
    entry = json.loads(next(a for s, a in steps if s == "ENTRYPOINT"))
    cmd = json.loads(next(a for s, a in steps if s == "CMD"))
    assert entry == list(pyproject["project"]["scripts"])
    container = by_kind("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert cmd == container["args"]


@pytest.mark.parametrize("name", ["namespace.yaml", "rbac.yaml", "configmap.yaml", "daemonset.yaml"])
def test_kustomization_lists_every_manifest(name: str) -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert name in kustomization["resources"]
