"""Protobuf schemas built at import time, without protoc or generated ``_pb2`` files.

Stage: shared plumbing for the exporters. In: a schema written as a compact field table
(``"repeated Sample sample = 2"``, one string per field). Out: message classes from
``google.protobuf`` that serialize and parse like generated code. A schema lives in its own
descriptor pool, so two schemas never clash with each other or with installed ``_pb2`` modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

__all__ = ["build_schema"]

FieldTable = Mapping[str, Sequence[str]]

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[str, int] = {
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32,
    "uint64": _FDP.TYPE_UINT64,
    "bool": _FDP.TYPE_BOOL,
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
    "double": _FDP.TYPE_DOUBLE,
}
_FIELD = re.compile(r"^\s*(?:(repeated)\s+)?([A-Za-z_][\w.]*)\s+([A-Za-z_]\w*)\s*=\s*(\d+)\s*$")


def _field(package: str, spec: str) -> descriptor_pb2.FieldDescriptorProto:
    match = _FIELD.match(spec)
    if match is None:
        raise ValueError(f"bad field spec {spec!r}: want '[repeated] TYPE name = NUMBER'")
    repeated, type_name, name, number = match.groups()
    field = _FDP(name=name, number=int(number), json_name=_json_name(name))
    field.label = _FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL
    if type_name in _SCALARS:
        field.type = _SCALARS[type_name]  # type: ignore[assignment]
    else:
        field.type = _FDP.TYPE_MESSAGE
        field.type_name = f".{package}.{type_name}"
    return field


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def build_schema(package: str, file_name: str, messages: FieldTable) -> dict[str, type[Message]]:
    """Message classes for ``messages`` (name -> field specs), in proto3 and package ``package``.

    Message-typed fields name another message of the same table (nested types are not needed
    by the formats hostflame speaks). Repeated scalars are packed, as proto3 makes them.
    """
    file_proto = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3")
    for message_name, specs in messages.items():
        file_proto.message_type.add(name=message_name, field=[_field(package, s) for s in specs])
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file_proto.SerializeToString())
    file_desc = pool.FindFileByName(file_name)
    classes: dict[str, type[Message]] = {}
    for message_name in messages:
        descriptor = file_desc.message_types_by_name[message_name]
        classes[message_name] = _message_class(descriptor)
    return classes


def _message_class(descriptor: object) -> type[Message]:
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:  # protobuf >= 4.22
        cls: type[Message] = get_class(descriptor)
        return cls
    factory = message_factory.MessageFactory()  # protobuf 4.21: deprecated later, removed in 5.x
    legacy: type[Message] = factory.GetPrototype(descriptor)  # type: ignore[attr-defined]
    return legacy
