"""Pyroscope exporter: the push API (connect unary, ``application/proto``) or legacy ``/ingest``.

Stage: exporter. In: ``TargetProfile`` values. Out: per target (per part, when over the server's
limits) one series in a ``POST {url}/push.v1.PusherService/Push`` (a ``PushRequest``): labels
``__name__="process_cpu"`` plus the target's labels, one ``RawSample`` (gzip pprof, a UUID4
``ID``); an interval's series are batched into requests of up to 4 MiB of profiles. With
``api = "ingest"``: one ``POST {url}/ingest?name=SERVICE{k=v,...}&from=&until=&format=pprof
&sampleRate=HZ&spyName=hostflame`` per target part, the gzip pprof as the body.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

from agent.config import RemoteConfig
from agent.delivery import Payload
from agent.exporters.remote import RemoteExporter
from agent.exporters.split import split_profile
from agent.model import TargetProfile
from agent.pprof import gzip_pprof
from agent.proto import pyroscope as pb

__all__ = ["PUSH_PATH", "PyroscopeExporter", "ingest_name"]

PUSH_PATH = "/push.v1.PusherService/Push"
INGEST_PATH = "/ingest"
METRIC_NAME = "process_cpu"
MAX_LABELS = 30  # Pyroscope's default max_label_names_per_series
_warned_labels = False
log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 4 * 2**20  # series are batched into one PushRequest up to this many profile bytes
_INGEST_UNSAFE = re.compile(r"[{}=,]")


def series_labels(target: TargetProfile) -> list[tuple[str, str]]:
    """``__name__``, ``service_name``, then the other labels by name, at most ``MAX_LABELS`` in all
    (the server refuses a series with more); a warning names the labels left out."""
    others = [(k, v) for k, v in target.labels if k != "service_name"]
    kept = [("__name__", METRIC_NAME), ("service_name", target.label("service_name", "unknown"))]
    room = MAX_LABELS - len(kept)
    if len(others) > room:
        global _warned_labels  # noqa: PLW0603 (one warning per process)
        if not _warned_labels:
            _warned_labels = True
            log.warning("target %s has %d labels; Pyroscope takes %d: leaving out %s (drop some with relabel rules)",
                        target.key, len(others) + len(kept), MAX_LABELS, ", ".join(k for k, _ in others[room:]))
    return kept + others[:room]


def ingest_name(target: TargetProfile) -> str:
    """``SERVICE{k=v,...}`` for the legacy API, which cannot quote ``{}=,`` inside values."""
    labels = dict(target.labels)
    service = _INGEST_UNSAFE.sub("_", labels.pop("service_name", "unknown"))
    inner = ",".join(f"{k}={_INGEST_UNSAFE.sub('_', v)}" for k, v in sorted(labels.items()))
    return f"{service}{{{inner}}}"


class PyroscopeExporter(RemoteExporter):
    name = "pyroscope"

    def __init__(self, remote: RemoteConfig) -> None:
        base = remote.url.rstrip("/")
        self.api = remote.api
        if remote.api == "ingest":
            super().__init__(remote, base + INGEST_PATH, "application/octet-stream")
        else:
            super().__init__(remote, base + PUSH_PATH, "application/proto", {"Connect-Protocol-Version": "1"})

    def encode(self, targets: Sequence[TargetProfile]) -> list[Payload]:
        if self.api == "ingest":
            return [p for t in targets for p in self._ingest(t)]
        payloads: list[Payload] = []
        batch: list[Any] = []
        names: list[str] = []
        size = 0
        for target in targets:
            labels = [pb.LabelPair(name=k, value=v) for k, v in series_labels(target)]
            for _part, raw in split_profile(target.profile):
                body = gzip_pprof(raw)
                if batch and size + len(body) > MAX_REQUEST_BYTES:
                    payloads.append(_push_payload(batch, names))
                    batch, names, size = [], [], 0
                batch.append(pb.RawProfileSeries(labels=labels, samples=[pb.RawSample(raw_profile=body,
                                                                                      ID=str(uuid.uuid4()))]))
                names.append(target.label("service_name"))
                size += len(body)
        if batch:
            payloads.append(_push_payload(batch, names))
        return payloads

    def _ingest(self, target: TargetProfile) -> list[Payload]:
        payloads = []
        parts = split_profile(target.profile)
        for i, (part, raw) in enumerate(parts, start=1):
            start_s = part.start_ns // 1_000_000_000
            until_s = max(start_s, (part.start_ns + part.duration_ns) // 1_000_000_000)
            params = (("name", ingest_name(target)), ("from", str(start_s)), ("until", str(until_s)),
                      ("format", "pprof"), ("sampleRate", str(part.frequency_hz)), ("spyName", "hostflame"))
            what = f"{target.label('service_name')} ({target.key}) part {i}/{len(parts)}"
            payloads.append(Payload(body=gzip_pprof(raw), description=what, params=params))
        return payloads


def _push_payload(series: list[Any], names: list[str]) -> Payload:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return Payload(body=pb.PushRequest(series=series).SerializeToString(),
                   description=f"{len(series)} profiles ({shown})", profiles=len(series))
