"""Targets and labels: one interval's Profile -> one TargetProfile per target, labelled.

Stage: after the collector, before the exporters. In: a ``Profile`` whose samples carry their
``ProcessInfo``, static labels, relabel rules and metadata providers. Out: ``TargetProfile``
values, and how many targets the rules dropped.

A target is a container (its id), else a systemd service (the innermost ``*.service`` of the
cgroup path), else a process (pid); kernel threads (no executable, no mappings) form one
``kernel`` target. Processes that were gone before the agent could read them (a short-lived
program: its first sample is announced after it exited, so nothing of its cgroup, executable
or maps is known) form one target per comm, ``gone:COMM``, without a ``pid`` series label:
under exec churn a series (and a file) per dead pid would cost more than it tells, and each
sample keeps its pid. Series labels before the rules: ``service_name``, ``host``, ``container_id``
(containers, with ``container_name`` when the runtime names it), ``namespace``, ``pod``,
``container``, ``node`` (Kubernetes pods), ``systemd_unit`` (services), ``pid`` and ``exe``
(processes), the static labels, and every ``__meta_*`` label of the target's busiest process. After the rules every name
starting with ``__`` is removed and ``service_name`` is inferred again if a rule emptied it.
Samples keep two labels of their own: ``comm`` and the numeric ``pid``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.metadata import MetadataProvider, default_providers, discover
from agent.model import ProcessInfo, Profile, ProfileSample, TargetProfile
from agent.relabel import RelabelRule, apply_rules

__all__ = ["KERNEL_TARGET", "SplitResult", "Targeter", "infer_service_name", "target_key"]

KERNEL_TARGET = "kernel"
GONE_PREFIX = "gone:"  # processes never read: one target per comm
SAMPLE_LABELS = ("comm",)  # string labels a sample keeps inside its target's profile
K8S_SERIES_LABELS = (("namespace", "__meta_kubernetes_namespace"), ("pod", "__meta_kubernetes_pod_name"),
                     ("container", "__meta_kubernetes_pod_container_name"),
                     ("node", "__meta_kubernetes_pod_node_name"))


_ProcessKey = tuple[int, int, str, str, str, str]  # pid, incarnation, comm, exe, cgroup, container id


@dataclass(frozen=True)
class SplitResult:
    targets: list[TargetProfile]
    dropped_by_rules: int


def target_key(meta: dict[str, str], info: ProcessInfo | None) -> str:
    if meta.get("__meta_container_id"):
        return f"container:{meta['__meta_container_id']}"
    if meta.get("__meta_systemd_unit"):
        return f"systemd:{meta['__meta_systemd_unit']}"
    if info is not None and info.is_kernel_thread:
        return KERNEL_TARGET
    if info is not None and not info.alive:
        return f"{GONE_PREFIX}{info.comm}"
    return f"process:{meta.get('__meta_process_pid', '0')}"


def infer_service_name(meta: dict[str, str]) -> str:
    """Kubernetes annotation, else namespace/container, else the container's name, else its short
    id, else the systemd unit (without ``.service``), else the executable's name, else comm;
    never empty."""
    annotation = meta.get("__meta_kubernetes_pod_annotation_pyroscope_io_service_name")
    if annotation:
        return annotation
    namespace = meta.get("__meta_kubernetes_namespace")
    container = meta.get("__meta_kubernetes_pod_container_name")
    if namespace and container:
        return f"{namespace}/{container}"
    if meta.get("__meta_container_name"):
        return meta["__meta_container_name"]
    if meta.get("__meta_container_id"):
        return meta["__meta_container_id"][:12]
    unit = meta.get("__meta_systemd_unit", "")
    if unit:
        return unit.removesuffix(".service")
    return meta.get("__meta_process_exe_name") or meta.get("__meta_process_comm") or "unknown"


def _unknown_process(sample: ProfileSample) -> ProcessInfo:
    """A ProcessInfo from a sample's own labels (profiles built without the collector)."""
    labels = dict(sample.labels)
    pid = dict(sample.num_labels).get("pid", 0)
    return ProcessInfo(pid=pid, incarnation=0, start_time_ticks=0, comm=labels.get("comm", ""),
                       exe=labels.get("exe", ""), cmdline=(), cgroup="", container_id=labels.get("container_id", ""),
                       mappings=(), alive=False)


class Targeter:
    """Splits profiles into labelled targets; holds the static labels, rules and providers."""

    def __init__(self, static_labels: Sequence[tuple[str, str]] = (), rules: tuple[RelabelRule, ...] = (),
                 providers: list[MetadataProvider] | None = None) -> None:
        self.static_labels = tuple(static_labels)
        self.rules = rules
        self.providers = default_providers() if providers is None else providers

    def split(self, profile: Profile) -> SplitResult:
        meta_cache: dict[_ProcessKey, tuple[dict[str, str], str]] = {}
        groups: dict[str, list[ProfileSample]] = {}
        weight: dict[str, dict[_ProcessKey, int]] = {}
        # A process's samples share its ProcessInfo object: its group is looked up once.
        by_info: dict[int, tuple[ProcessInfo, list[ProfileSample], dict[_ProcessKey, int], _ProcessKey]] = {}
        trimmed: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        for sample in profile.samples:
            slot = by_info.get(id(sample.process)) if sample.process is not None else None
            if slot is None:
                info = sample.process or _unknown_process(sample)
                pkey = (info.pid, info.incarnation, info.comm, info.exe, info.cgroup, info.container_id)
                cached = meta_cache.get(pkey)
                if cached is None:
                    meta = discover(info, profile.host, self.providers)
                    # a sample without ProcessInfo is keyed by its own labels, never "gone"
                    cached = meta_cache[pkey] = (meta, target_key(meta, sample.process))
                key = cached[1]
                slot = (info, groups.setdefault(key, []), weight.setdefault(key, {}), pkey)
                if sample.process is not None:  # the slot holds the object, so its id stays its own
                    by_info[id(info)] = slot
            _, group, per, pkey = slot
            group.append(_trim(sample, trimmed))
            per[pkey] = per.get(pkey, 0) + sample.count
        targets = []
        dropped = 0
        for key, samples in groups.items():
            busiest = max(weight[key].items(), key=lambda kv: kv[1])[0]
            labels = self._labels(key, meta_cache[busiest][0], profile.host)
            if labels is None:
                dropped += 1
                continue
            sub = Profile(samples=tuple(samples), frequency_hz=profile.frequency_hz, start_ns=profile.start_ns,
                          duration_ns=profile.duration_ns, host=profile.host)
            targets.append(TargetProfile(labels=labels, profile=sub, key=key))
        return SplitResult(targets=targets, dropped_by_rules=dropped)

    def _labels(self, key: str, meta: dict[str, str], host: str) -> tuple[tuple[str, str], ...] | None:
        labels = dict(meta)
        if key == KERNEL_TARGET:
            labels["service_name"] = KERNEL_TARGET
        else:
            labels["service_name"] = infer_service_name(meta)
        labels["host"] = host
        if key.startswith("container:"):
            labels["container_id"] = meta["__meta_container_id"]
            if meta.get("__meta_container_name"):
                labels["container_name"] = meta["__meta_container_name"]
            for name, source in K8S_SERIES_LABELS:
                if meta.get(source):
                    labels[name] = meta[source]
        elif key.startswith("systemd:"):
            labels["systemd_unit"] = meta["__meta_systemd_unit"]
        elif key != KERNEL_TARGET and not key.startswith(GONE_PREFIX):
            labels["pid"] = meta.get("__meta_process_pid", "0")
            if meta.get("__meta_process_exe"):
                labels["exe"] = meta["__meta_process_exe"]
        labels.update(self.static_labels)
        relabelled = apply_rules(labels, self.rules)
        if relabelled is None:
            return None
        out = {k: v for k, v in relabelled.items() if not k.startswith("__") and v}
        if not out.get("service_name"):
            out["service_name"] = infer_service_name(meta)
        return tuple(sorted(out.items()))


def _trim(sample: ProfileSample, memo: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]) -> ProfileSample:
    """``sample`` with only the ``SAMPLE_LABELS``; ``memo`` keeps what each label tuple trims to."""
    labels = memo.get(sample.labels)
    if labels is None:
        labels = memo[sample.labels] = tuple((k, v) for k, v in sample.labels if k in SAMPLE_LABELS)
    if labels == sample.labels:
        return sample
    return ProfileSample(sample.stack, sample.count, labels, sample.num_labels, sample.process)
