"""Configuration: frozen settings for each command, validated before anything starts.

In: parsed command-line values. Out: ``RecordConfig`` / ``RunConfig``; ``validate`` raises
``UsageError`` naming the setting (as the user spelled it: flag, variable or TOML key) and
the accepted range. ``agent.settings`` layers a TOML file < HOSTFLAME_* < flags into a RunConfig.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import UsageError
from agent.relabel import RelabelRule

MIN_FREQUENCY_HZ = 1
MAX_FREQUENCY_HZ = 10_000
DEFAULT_FREQUENCY_HZ = 99
DEFAULT_INTERVAL_S = 15.0
DEFAULT_EXPORT_DIR = Path("/var/lib/hostflame/profiles")
DEFAULT_CPU_BUDGET_PERCENT = 1.0  # of one CPU, over a budget window
DEFAULT_MEMORY_BUDGET_MB = 80.0  # resident set of the agent (40-60 MB under run_overhead's load, disk export)
DEFAULT_BUDGET_WINDOW_S = 30.0


def check_frequency(frequency_hz: int) -> None:
    if not MIN_FREQUENCY_HZ <= frequency_hz <= MAX_FREQUENCY_HZ:
        raise UsageError(
            f"--frequency must be between {MIN_FREQUENCY_HZ} and {MAX_FREQUENCY_HZ} Hz, got {frequency_hz}"
        )


def check_pids(pids: tuple[int, ...], proc_root: Path = Path("/proc")) -> None:
    for pid in pids:
        if pid <= 0 or not (proc_root / str(pid)).is_dir():
            raise UsageError(f"--pid {pid}: no such process")


@dataclass(frozen=True)
class RecordConfig:
    duration_s: float
    outputs: tuple[Path, ...]
    frequency_hz: int = DEFAULT_FREQUENCY_HZ
    pids: tuple[int, ...] = ()
    top: int = 15

    def validate(self) -> None:
        if not self.duration_s > 0:
            raise UsageError(f"--duration must be more than 0 seconds, got {self.duration_s:g}")
        check_frequency(self.frequency_hz)
        check_pids(self.pids)
        if not self.outputs:
            raise UsageError("no output: give at least one -o PATH (.pb.gz, .folded, .html or .speedscope.json)")
        if self.top < 0:
            raise UsageError(f"--top must be 0 or more, got {self.top}")
        from agent.exporters.files import check_outputs

        check_outputs(self.outputs)


@dataclass(frozen=True)
class RemoteConfig:
    """Where and how to reach one backend (Pyroscope or an OTLP endpoint)."""

    url: str
    api: str = "push"  # pyroscope only: "push" (connect API) or "ingest" (legacy /ingest)
    tenant_id: str = ""  # sent as X-Scope-OrgID
    basic_auth_user: str = ""
    basic_auth_password: str = ""
    bearer_token: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: str = ""  # PEM bundle to verify the server with (default: the system store)
    timeout_s: float = 10.0  # per request
    queue_bytes: int = 64 * 2**20
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    max_age_s: float = 600.0


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_POD_LABELS = ("app", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                      "app.kubernetes.io/version")


@dataclass(frozen=True)
class KubernetesConfig:
    """Where this node's pods are listed: the kubelet, else the API server; off when neither is known."""

    node_name: str = ""  # default: $NODE_NAME (the DaemonSet sets it from spec.nodeName)
    kubelet_url: str = ""  # "https://NODE_IP:10250": GET /pods (needs nodes/proxy); wins over api_url
    api_url: str = ""  # default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT inside a pod
    token_file: str = SERVICE_ACCOUNT_DIR + "/token"
    ca_file: str = SERVICE_ACCOUNT_DIR + "/ca.crt"  # "" verifies against the system store
    label_allowlist: tuple[str, ...] = DEFAULT_POD_LABELS
    annotation_allowlist: tuple[str, ...] = ()  # pyroscope.io/service_name is always read
    refresh_min_s: float = 10.0  # at most one refresh per this many seconds (unknown container ids)
    timeout_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.kubelet_url or (self.api_url and self.node_name))


@dataclass(frozen=True)
class DiskConfig:
    dir: Path
    max_age_s: float = 0.0  # 0: keep files of any age
    max_total_bytes: int = 0  # 0: no size limit


@dataclass(frozen=True)
class RunConfig:
    interval_s: float = DEFAULT_INTERVAL_S
    frequency_hz: int = DEFAULT_FREQUENCY_HZ
    export_dir: Path | None = DEFAULT_EXPORT_DIR  # the disk exporter's directory; None: no disk exporter
    duration_s: float = 0.0  # 0: until SIGTERM/SIGINT
    host: str = ""
    shutdown_grace_s: float = 5.0
    metrics_addr: str = ""  # "HOST:PORT" for the Prometheus endpoint; "" turns it off
    labels: tuple[tuple[str, str], ...] = ()
    relabel: tuple[RelabelRule, ...] = ()
    disk_max_age_s: float = 0.0
    disk_max_total_bytes: int = 0
    pyroscope: RemoteConfig | None = None
    otlp: RemoteConfig | None = None
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    names: dict[str, str] = field(default_factory=dict, compare=False)  # key -> where it was set

    def name(self, key: str) -> str:
        """How the user spelled ``key`` where its value came from: a flag, a variable or a TOML key."""
        return self.names.get(key, key)

    @property
    def disk(self) -> DiskConfig | None:
        if self.export_dir is None:
            return None
        return DiskConfig(self.export_dir, self.disk_max_age_s, self.disk_max_total_bytes)
    cpu_budget_percent: float = DEFAULT_CPU_BUDGET_PERCENT  # 0: no CPU budget
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB  # 0: no memory budget
    budget_window_s: float = DEFAULT_BUDGET_WINDOW_S

    def validate(self) -> None:
        for key in ("cpu_budget_percent", "memory_budget_mb"):
            if getattr(self, key) < 0:
                raise UsageError(f"{self.name(key)} must be 0 (no budget) or more, got {getattr(self, key):g}")
        if not self.budget_window_s >= 1:
            raise UsageError(f"{self.name('budget_window_s')} must be at least 1 second, got {self.budget_window_s:g}")
        if not self.interval_s >= 1:
            raise UsageError(f"{self.name('interval_s')} must be at least 1 second, got {self.interval_s:g}")
        if self.duration_s < 0:
            raise UsageError(f"{self.name('duration_s')} must be 0 (no limit) or more, got {self.duration_s:g}")
        if not MIN_FREQUENCY_HZ <= self.frequency_hz <= MAX_FREQUENCY_HZ:
            raise UsageError(f"{self.name('frequency_hz')} must be between {MIN_FREQUENCY_HZ} and "
                             f"{MAX_FREQUENCY_HZ} Hz, got {self.frequency_hz}")
        if self.shutdown_grace_s < 0:
            raise UsageError(f"{self.name('shutdown_grace_s')} must be 0 or more, got {self.shutdown_grace_s:g}")
        if self.metrics_addr:
            parse_addr(self.metrics_addr, self.name("metrics_addr"))
        if self.export_dir is not None:
            self._check_export_dir(self.export_dir)
        for section, remote in (("pyroscope", self.pyroscope), ("otlp", self.otlp)):
            if remote is not None:
                self._check_remote(section, remote)
        self._check_kubernetes(self.kubernetes)

    def _check_kubernetes(self, k8s: KubernetesConfig) -> None:
        for key in ("kubelet_url", "api_url"):
            url = getattr(k8s, key)
            parsed = urlsplit(url)
            if url and (parsed.scheme not in ("http", "https") or not parsed.netloc):
                raise UsageError(f"{self.name('kubernetes.' + key)}: want http(s)://HOST[:PORT], got {url!r}")
        for key in ("refresh_min_s", "timeout_s"):
            if not getattr(k8s, key) > 0:
                raise UsageError(f"{self.name('kubernetes.' + key)} must be more than 0, got {getattr(k8s, key)}")
        if k8s.api_url and not k8s.kubelet_url and not k8s.node_name:
            raise UsageError(f"{self.name('kubernetes.api_url')} needs kubernetes.node_name (or NODE_NAME)")

    def _check_export_dir(self, export_dir: Path) -> None:
        flag = self.name("disk.dir")
        if export_dir.exists() and not export_dir.is_dir():
            raise UsageError(f"{flag} {export_dir} is not a directory")
        existing = export_dir  # created (with parents) at start when missing
        try:
            while not existing.exists():
                existing = existing.parent
        except OSError as exc:
            raise UsageError(f"{flag} {export_dir}: cannot reach {existing}: {exc.strerror}") from None
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {export_dir}: {existing} is not writable")

    def _check_remote(self, section: str, remote: RemoteConfig) -> None:
        parsed = urlsplit(remote.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"{self.name(section + '.url')}: want http(s)://HOST[:PORT][/PATH], got {remote.url!r}")
        if remote.bearer_token and remote.basic_auth_user:
            raise UsageError(f"{section}: give bearer_token or basic_auth_user, not both")
        if remote.basic_auth_password and not remote.basic_auth_user:
            raise UsageError(f"{self.name(section + '.basic_auth_password')} needs {section}.basic_auth_user too")
        if remote.ca_file and not os.path.isfile(remote.ca_file):
            raise UsageError(f"{self.name(section + '.ca_file')}: no such file {remote.ca_file}")
        if remote.api not in ("push", "ingest"):
            raise UsageError(f"{self.name(section + '.api')}: want push or ingest, got {remote.api!r}")
        for key in ("timeout_s", "initial_backoff_s", "max_backoff_s", "max_age_s"):
            if not getattr(remote, key) > 0:
                raise UsageError(f"{self.name(section + '.' + key)} must be more than 0, got {getattr(remote, key)}")
        if remote.queue_bytes < 2**20:
            raise UsageError(f"{self.name(section + '.queue_bytes')} must be at least 1 MiB, got {remote.queue_bytes}")


def parse_addr(text: str, name: str) -> tuple[str, int]:
    """("HOST", PORT) from "HOST:PORT" or ":PORT"; ``UsageError`` naming ``name`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{name}: want HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
