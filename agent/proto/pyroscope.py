"""Pyroscope's push API messages (``push.v1.PushRequest`` and the ``types.v1.LabelPair`` it uses).

Field numbers from grafana/pyroscope ``api/push/v1/push.proto`` and ``api/types/v1/types.proto``
(see ../shared/protocols.md). ``LabelPair`` is declared in this schema's package: the wire
format does not carry package names, so servers decode it as ``types.v1.LabelPair``.
"""

from __future__ import annotations

from agent.proto import build_schema

_SCHEMA = build_schema(
    "push.v1",
    "hostflame/pyroscope_push.proto",
    {
        "LabelPair": ["string name = 1", "string value = 2"],
        "RawSample": ["bytes raw_profile = 1", "string ID = 2"],
        "RawProfileSeries": ["repeated LabelPair labels = 1", "repeated RawSample samples = 2"],
        "PushRequest": ["repeated RawProfileSeries series = 1"],
    },
)

LabelPair = _SCHEMA["LabelPair"]
RawSample = _SCHEMA["RawSample"]
RawProfileSeries = _SCHEMA["RawProfileSeries"]
PushRequest = _SCHEMA["PushRequest"]
