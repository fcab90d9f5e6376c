"""Pyroscope exporter: the push API (connect unary, ``application/proto``) or legacy ``/ingest``.

Stage: exporter. In: ``TargetProfile`` values. Out: per target (per part, when over the server's
limits), one ``POST {url}/push.v1.PusherService/Push`` whose ``PushRequest`` holds one series:
labels ``__name__="process_cpu"`` plus the target's labels, one ``RawSample`` (gzip pprof, a
UUID4 ``ID``); or with ``api = "ingest"`` one ``POST {url}/ingest?name=SERVICE{k=v,...}&from=
&until=&format=pprof&sampleRate=HZ&spyName=hostflame`` with the gzip pprof as the body.
"""

from __future__ import annotations

import re
import uuid

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
_INGEST_UNSAFE = re.compile(r"[{}=,]")


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

    def encode(self, target: TargetProfile) -> list[Payload]:
        parts = split_profile(target.profile)
        service = target.label("service_name")
        payloads = []
        for i, (part, raw) in enumerate(parts, start=1):
            body = gzip_pprof(raw)
            what = f"{service} ({target.key}) part {i}/{len(parts)}"
            if self.api == "ingest":
                start_s = part.start_ns // 1_000_000_000
                until_s = (part.start_ns + part.duration_ns) // 1_000_000_000
                params = (("name", ingest_name(target)), ("from", str(start_s)), ("until", str(max(until_s, start_s))),
                          ("format", "pprof"), ("sampleRate", str(part.frequency_hz)), ("spyName", "hostflame"))
                payloads.append(Payload(body=body, description=what, params=params))
                continue
            series = pb.RawProfileSeries(
                labels=[pb.LabelPair(name="__name__", value=METRIC_NAME)]
                + [pb.LabelPair(name=k, value=v) for k, v in target.labels],
                samples=[pb.RawSample(raw_profile=body, ID=str(uuid.uuid4()))],
            )
            payloads.append(Payload(body=pb.PushRequest(series=[series]).SerializeToString(), description=what))
        return payloads
