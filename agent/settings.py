"""Settings for ``hostflame run``: defaults < TOML file < HOSTFLAME_* environment < flags.

In: the ``--config`` path, ``os.environ``, and the flags given (None when not given).
Out: a ``RunConfig`` (validated by the caller). An unknown key, a wrong type or a bad value
raises ``UsageError`` naming the key as the user spelled it (``pyroscope.timeout_s`` in FILE,
``HOSTFLAME_PYROSCOPE_TIMEOUT_S``, ``--interval``).

Environment: every scalar key is ``HOSTFLAME_`` + the dotted key in capitals with ``.`` -> ``_``
(``HOSTFLAME_INTERVAL_S``, ``HOSTFLAME_PYROSCOPE_URL``, ``HOSTFLAME_DISK_DIR``), and
``HOSTFLAME_LABELS=k=v,k2=v2``. Other ``HOSTFLAME_*`` variables (``HOSTFLAME_CACHE_DIR``) are
not settings of ``run`` and are left alone.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from agent.config import DEFAULT_EXPORT_DIR, KubernetesConfig, RemoteConfig, RunConfig
from agent.errors import UsageError
from agent.relabel import parse_rule

__all__ = ["SCALAR_KEYS", "load_run_config"]

_REMOTE_KEYS: dict[str, type] = {
    "url": str, "tenant_id": str, "basic_auth_user": str, "basic_auth_password": str, "bearer_token": str,
    "ca_file": str, "timeout_s": float, "queue_bytes": int, "initial_backoff_s": float, "max_backoff_s": float,
    "max_age_s": float,
}
SCALAR_KEYS: dict[str, type] = {
    "interval_s": float, "frequency_hz": int, "duration_s": float, "host": str, "shutdown_grace_s": float,
    "metrics_addr": str, "cpu_budget_percent": float, "memory_budget_mb": float, "budget_window_s": float,
    "disk.dir": str, "disk.max_age_s": float, "disk.max_total_bytes": int,
    **{f"pyroscope.{k}": t for k, t in _REMOTE_KEYS.items()}, "pyroscope.api": str,
    **{f"otlp.{k}": t for k, t in _REMOTE_KEYS.items()},
    "kubernetes.node_name": str, "kubernetes.kubelet_url": str, "kubernetes.api_url": str,
    "kubernetes.token_file": str, "kubernetes.ca_file": str, "kubernetes.label_allowlist": str,
    "kubernetes.annotation_allowlist": str, "kubernetes.refresh_min_s": float, "kubernetes.timeout_s": float,
}
TABLE_KEYS = ("labels", "pyroscope.headers", "otlp.headers")  # string -> string tables
SECTIONS = ("disk", "pyroscope", "otlp", "kubernetes")

Layer = dict[str, tuple[Any, str]]  # dotted key -> (value, how the user named it)


def _typed(value: Any, kind: type, name: str) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise UsageError(f"{name}: must be a string, got {value!r}")
        return value
    if isinstance(value, bool):
        raise UsageError(f"{name}: must be a number, got {value!r}")
    if isinstance(value, str):  # environment and flags give text
        try:
            value = kind(value)
        except ValueError:
            raise UsageError(f"{name}: must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is int and not isinstance(value, int):
        raise UsageError(f"{name}: must be an integer, got {value!r}")
    if not isinstance(value, (int, float)):
        raise UsageError(f"{name}: must be a number, got {value!r}")
    return kind(value)


def _string_table(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UsageError(f"{name}: must be a table of strings (key = \"value\")")
    return dict(value)


def _file_layer(path: Path) -> tuple[Layer, list[Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML: {exc}") from None
    layer: Layer = {}
    where = f"in {path}"
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise UsageError(f"{key} {where}: must be a table ([{key}])")
            for sub, subvalue in value.items():
                dotted = f"{key}.{sub}"
                _file_key(layer, dotted, subvalue, where)
        elif key == "relabel":
            continue
        else:
            _file_key(layer, key, value, where)
    rules = data.get("relabel", [])
    if not isinstance(rules, list):
        raise UsageError(f"relabel {where}: must be an array of tables ([[relabel]])")
    return layer, rules


def _file_key(layer: Layer, dotted: str, value: Any, where: str) -> None:
    name = f"{dotted} {where}"
    if dotted in SCALAR_KEYS:
        layer[dotted] = (_typed(value, SCALAR_KEYS[dotted], name), name)
    elif dotted in TABLE_KEYS:
        layer[dotted] = (_string_table(value, name), name)
    else:
        raise UsageError(f"{name}: unknown key (see packaging/hostflame.example.toml)")


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for dotted, kind in SCALAR_KEYS.items():
        var = "HOSTFLAME_" + dotted.upper().replace(".", "_")
        if var in env:
            layer[dotted] = (_typed(env[var], kind, var), var)
    if "HOSTFLAME_LABELS" in env and env["HOSTFLAME_LABELS"].strip():
        pairs = [parse_label(p.strip(), "HOSTFLAME_LABELS") for p in env["HOSTFLAME_LABELS"].split(",") if p.strip()]
        layer["labels"] = (dict(pairs), "HOSTFLAME_LABELS")
    return layer


def parse_label(text: str, name: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit() or key.startswith("__"):
        raise UsageError(f"{name}: want NAME=VALUE with NAME like service_name, got {text!r}")
    return key, value


FLAG_KEYS = {  # flag dest -> (dotted key, flag)
    "interval": ("interval_s", "--interval"), "frequency": ("frequency_hz", "--frequency"),
    "duration": ("duration_s", "--duration"), "export_dir": ("disk.dir", "--export-dir"),
    "pyroscope_url": ("pyroscope.url", "--pyroscope-url"), "otlp_url": ("otlp.url", "--otlp-url"),
    "metrics_addr": ("metrics_addr", "--metrics-addr"), "cpu_budget": ("cpu_budget_percent", "--cpu-budget"),
    "memory_budget": ("memory_budget_mb", "--memory-budget"), "budget_window": ("budget_window_s", "--budget-window"),
}


def _flag_layer(flags: Mapping[str, Any]) -> Layer:
    layer: Layer = {}
    for dest, (dotted, flag) in FLAG_KEYS.items():
        value = flags.get(dest)
        if value is not None:
            layer[dotted] = (_typed(str(value) if isinstance(value, Path) else value, SCALAR_KEYS[dotted], flag), flag)
    labels = flags.get("label") or []
    if labels:
        layer["labels"] = (dict(parse_label(t, "--label") for t in labels), "--label")
    return layer


def load_run_config(config_file: Path | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> RunConfig:
    """The merged settings (see the module docstring); not yet validated."""
    file_layer, raw_rules = _file_layer(config_file) if config_file is not None else ({}, [])
    merged: Layer = {}
    for layer in (file_layer, _env_layer(env), _flag_layer(flags)):
        for key, entry in layer.items():
            if key in TABLE_KEYS and key in merged:  # labels add up; a later layer wins per name
                merged[key] = ({**merged[key][0], **entry[0]}, entry[1])
            else:
                merged[key] = entry
    where = f" in {config_file}" if config_file else ""
    rules = tuple(parse_rule(raw, f"relabel[{i}]{where}") for i, raw in enumerate(raw_rules))
    value = {k: v for k, (v, _) in merged.items()}
    names = {k: n for k, (_, n) in merged.items()}
    for key in ("labels", "pyroscope.headers", "otlp.headers"):
        for label in value.get(key, {}):
            if key == "labels":
                parse_label(f"{label}=", names[key])
    remotes = {section: _remote(section, value) for section in ("pyroscope", "otlp")}
    export_dir = value.get("disk.dir")
    if export_dir is None and not any(remotes.values()):
        export_dir = DEFAULT_EXPORT_DIR
    top = {f.name for f in fields(RunConfig)}
    kwargs = {k: v for k, v in value.items() if k in top and k != "labels"}
    return RunConfig(
        **kwargs,
        export_dir=Path(export_dir) if export_dir else None,
        labels=tuple(sorted(value.get("labels", {}).items())),
        relabel=rules,
        disk_max_age_s=value.get("disk.max_age_s", 0.0),
        disk_max_total_bytes=value.get("disk.max_total_bytes", 0),
        pyroscope=remotes["pyroscope"],
        otlp=remotes["otlp"],
        kubernetes=_kubernetes(value, env),
        names=names,
    )


def _kubernetes(value: dict[str, Any], env: Mapping[str, str]) -> KubernetesConfig:
    """The [kubernetes] keys; node name and API server default to what a pod is given
    (``NODE_NAME`` from the DaemonSet, ``KUBERNETES_SERVICE_HOST``/``_PORT`` from Kubernetes)."""
    given = {k.removeprefix("kubernetes."): v for k, v in value.items() if k.startswith("kubernetes.")}
    for key in ("label_allowlist", "annotation_allowlist"):
        if key in given:
            given[key] = tuple(p.strip() for p in given[key].split(",") if p.strip())
    given.setdefault("node_name", env.get("NODE_NAME", ""))
    if "api_url" not in given and env.get("KUBERNETES_SERVICE_HOST"):
        host = env["KUBERNETES_SERVICE_HOST"]
        host = f"[{host}]" if ":" in host else host
        given["api_url"] = f"https://{host}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
    return KubernetesConfig(**given)


def _remote(section: str, value: dict[str, Any]) -> RemoteConfig | None:
    prefix = section + "."
    given = {k[len(prefix):]: v for k, v in value.items() if k.startswith(prefix)}
    if not given.get("url"):
        return None
    headers = tuple(sorted(given.pop("headers", {}).items()))
    return RemoteConfig(**given, headers=headers)
