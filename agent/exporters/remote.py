"""The shape every network exporter shares: encode a target into payloads, queue them.

Stage: exporter. In: ``TargetProfile`` values from the daemon. Out: ``Payload`` values offered
to this exporter's ``Delivery`` (a byte-capped queue and its sender thread), so ``export``
costs only the encoding and never waits on the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.config import RemoteConfig
from agent.delivery import Delivery, DeliveryStats, Payload, RetryPolicy
from agent.exporters.transport import HttpTransport
from agent.model import TargetProfile


class RemoteExporter:
    """Base of the Pyroscope and OTLP exporters: subclasses set ``name`` and ``encode``."""

    name = "remote"

    def __init__(self, remote: RemoteConfig, url: str, content_type: str,
                 extra_headers: Mapping[str, str] | None = None) -> None:
        self.remote = remote
        self.transport = HttpTransport(remote, url, content_type, extra_headers)
        policy = RetryPolicy(initial_backoff_s=remote.initial_backoff_s, max_backoff_s=remote.max_backoff_s,
                             max_age_s=remote.max_age_s)
        self.delivery = Delivery(self.name, self.transport.post, remote.queue_bytes, policy)

    def encode(self, targets: Sequence[TargetProfile]) -> list[Payload]:
        """The requests that carry ``targets`` (batched where the API allows)."""
        raise NotImplementedError

    def export(self, target: TargetProfile) -> None:
        self.export_all([target])

    def export_all(self, targets: Sequence[TargetProfile]) -> None:
        """One interval's targets: encoded here, sent by the delivery thread."""
        for payload in self.encode(targets):
            self.delivery.offer(payload)

    def stats(self) -> DeliveryStats:
        return self.delivery.stats()

    def close(self, grace_s: float = 5.0) -> DeliveryStats:
        stats = self.delivery.close(grace_s)
        self.transport.close()
        return stats
