"""From one interval's Profile to every exporter: split into targets, relabel, export.

Stage: between the session (profiles) and the exporters. In: a ``Profile`` per interval.
Out: ``TargetProfile`` values handed to each exporter: the disk exporter writes at once, the
network exporters encode and queue (their senders run in threads, so this never waits on the
network). Also keeps the telemetry's interval counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from agent.config import RunConfig
from agent.delivery import DeliveryStats
from agent.exporters.disk import DiskExporter
from agent.labels import Targeter
from agent.metadata import MetadataProvider, observe
from agent.model import ProcessInfo, Profile, TargetProfile
from agent.telemetry import Telemetry

if TYPE_CHECKING:
    from agent.exporters.remote import RemoteExporter

__all__ = ["Pipeline", "TargetExporter"]

log = logging.getLogger(__name__)


class TargetExporter(Protocol):
    def export(self, target: TargetProfile) -> None: ...


class Pipeline:
    def __init__(self, targeter: Targeter, disk: DiskExporter | None, remotes: list[RemoteExporter]) -> None:
        self.targeter = targeter
        self.disk = disk
        self.remotes = remotes
        self.telemetry = Telemetry(self.delivery_stats)
        self.last_targets = 0

    @classmethod
    def from_config(cls, config: RunConfig, providers: list[MetadataProvider] | None = None) -> Pipeline:
        """The exporters the config names; a network exporter's modules (HTTP, TLS, its protocol's
        messages: ~12 MB resident, most of it TLS) are imported only when it is set."""
        disk_config = config.disk
        disk = None
        if disk_config is not None:
            disk = DiskExporter(disk_config.dir, max_age_s=disk_config.max_age_s,
                                max_total_bytes=disk_config.max_total_bytes)
        remotes: list[RemoteExporter] = []
        if config.pyroscope is not None:
            from agent.exporters.pyroscope import PyroscopeExporter

            remotes.append(PyroscopeExporter(config.pyroscope))
        if config.otlp is not None:
            from agent.exporters.otlp import OtlpExporter

            remotes.append(OtlpExporter(config.otlp))
        if providers is None:
            from agent.metadata import default_providers

            providers = default_providers(config.kubernetes)
        return cls(Targeter(config.labels, config.relabel, providers), disk, remotes)

    def observe(self, info: ProcessInfo) -> None:
        """A process was just snapshotted: metadata providers may note what will not last."""
        observe(info, self.targeter.providers)

    def delivery_stats(self) -> Mapping[str, DeliveryStats]:
        return {r.name: r.stats() for r in self.remotes}

    def handle(self, profile: Profile, processes: int = 0) -> int:
        """Split, label and export one interval; returns the number of targets exported."""
        split = self.targeter.split(profile)
        written = 0
        if self.disk is not None and split.targets:
            paths, failed = self.disk.export_all(split.targets)
            written = len(paths)
            if failed:  # a full disk must not stop sampling
                log.warning("disk exporter could not write %d of %d profiles: %s", len(failed),
                            len(split.targets), failed[0])
        for remote in self.remotes:
            remote.export_all(split.targets)
        self.last_targets = len(split.targets)
        self.telemetry.record_interval(profile, processes, len(split.targets), split.dropped_by_rules,
                                       {"disk": written} if self.disk is not None else {})
        return len(split.targets)

    def close(self, grace_s: float) -> dict[str, DeliveryStats]:
        """Give the senders ``grace_s`` seconds in all to deliver what is queued; then stop."""
        deadline = time.monotonic() + grace_s
        final = {}
        for remote in self.remotes:
            final[remote.name] = remote.close(max(0.0, deadline - time.monotonic()))
        return final
