"""OTLP profiles exporter: ``POST {url}/v1development/profiles`` (``application/x-protobuf``).

Stage: exporter. In: ``TargetProfile`` values. Out: an interval's targets (split into parts
when over the limits) batched into ``ExportProfilesServiceRequest`` values built with the
``opentelemetry-proto`` package's generated classes: one dictionary per request (mapping,
location, function, string, attribute, stack tables; index 0 the zero value of each), one
ResourceProfiles per target with the resource attributes the OTel eBPF profiler uses
(``service.name``, ``host.name``, ``container.id``, ``process.pid``, ``process.executable.path``,
``process.executable.name``, then the target's other labels), one Profile: sample type
samples/count, period type cpu/nanoseconds, period 1e9/frequency; each sample's ``thread.name``
attribute is its comm; mappings carry ``process.executable.build_id.gnu``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as service_pb
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.proto.resource.v1 import resource_pb2

from agent.config import RemoteConfig
from agent.delivery import Payload
from agent.exporters.remote import RemoteExporter
from agent.exporters.split import split_samples
from agent.model import FrameKind, Module, Profile, Symbolized, TargetProfile
from agent.pprof import KERNEL_MODULE

__all__ = ["OTLP_PATH", "OtlpExporter", "build_request"]

OTLP_PATH = "/v1development/profiles"
BATCH_SAMPLES = 16_000  # samples per request; an interval's targets share one request up to this
_RENAMED = {"service_name": "service.name", "host": "host.name", "container_id": "container.id",
            "exe": "process.executable.path"}


class _Dictionary:
    def __init__(self) -> None:
        self.out = pb.ProfilesDictionary()
        self.out.mapping_table.add()
        self.out.location_table.add()
        self.out.function_table.add()
        self.out.link_table.add()
        self.out.attribute_table.add()
        self.out.stack_table.add()
        self.strings: dict[str, int] = {"": 0}
        self.mappings: dict[Module, int] = {}
        self.functions: dict[tuple[str, str, str], int] = {}
        self.locations: dict[int, int] = {}  # id(Symbolized) -> index
        self.attributes: dict[tuple[str, str], int] = {}
        self.stacks: dict[tuple[int, ...], int] = {}

    def string(self, value: str) -> int:
        index = self.strings.get(value)
        if index is None:
            index = self.strings[value] = len(self.strings)
        return index

    def attribute(self, key: str, value: str) -> int:
        index = self.attributes.get((key, value))
        if index is None:
            self.out.attribute_table.add(key_strindex=self.string(key), value=common_pb2.AnyValue(string_value=value))
            index = self.attributes[(key, value)] = len(self.out.attribute_table) - 1
        return index

    def mapping(self, module: Module) -> int:
        index = self.mappings.get(module)
        if index is None:
            build_id = module.build_id.hex()
            attrs = [self.attribute("process.executable.build_id.gnu", build_id)] if build_id else []
            self.out.mapping_table.add(memory_start=module.start, memory_limit=module.end,
                                       file_offset=module.file_offset, filename_strindex=self.string(module.path),
                                       attribute_indices=attrs)
            index = self.mappings[module] = len(self.out.mapping_table) - 1
        return index

    def function(self, name: str, system_name: str, filename: str) -> int:
        key = (name, system_name, filename)
        index = self.functions.get(key)
        if index is None:
            self.out.function_table.add(name_strindex=self.string(name), system_name_strindex=self.string(system_name),
                                        filename_strindex=self.string(filename))
            index = self.functions[key] = len(self.out.function_table) - 1
        return index

    def location(self, sym: Symbolized) -> int:
        index = self.locations.get(id(sym))
        if index is None:
            module = sym.module or (KERNEL_MODULE if sym.kind is FrameKind.KERNEL else None)
            lines = [pb.Line(function_index=self.function(f.function, f.system_name, f.file), line=f.line)
                     for f in sym.frames]
            self.out.location_table.add(mapping_index=self.mapping(module) if module else 0, address=sym.addr,
                                        lines=lines)
            index = self.locations[id(sym)] = len(self.out.location_table) - 1
        return index

    def stack(self, locations: tuple[int, ...]) -> int:
        index = self.stacks.get(locations)
        if index is None:
            self.out.stack_table.add(location_indices=locations)
            index = self.stacks[locations] = len(self.out.stack_table) - 1
        return index

    def finish(self) -> Any:
        self.out.string_table.extend(self.strings)
        return self.out


def _resource(target: TargetProfile) -> Any:
    attributes = []
    for key, value in target.labels:
        if key == "pid":
            attributes.append(common_pb2.KeyValue(key="process.pid",
                                                  value=common_pb2.AnyValue(int_value=int(value or 0))))
            continue
        attributes.append(common_pb2.KeyValue(key=_RENAMED.get(key, key),
                                              value=common_pb2.AnyValue(string_value=value)))
        if key == "exe":
            attributes.append(common_pb2.KeyValue(key="process.executable.name",
                                                  value=common_pb2.AnyValue(string_value=os.path.basename(value))))
    return resource_pb2.Resource(attributes=attributes)


def build_request(parts: Sequence[tuple[TargetProfile, Profile]]) -> Any:
    """One ``ExportProfilesServiceRequest`` for targets (or parts of them), sharing one dictionary."""
    dictionary = _Dictionary()
    resource_profiles = [_resource_profiles(dictionary, target, part) for target, part in parts]
    return service_pb.ExportProfilesServiceRequest(resource_profiles=resource_profiles,
                                                   dictionary=dictionary.finish())


def _resource_profiles(dictionary: _Dictionary, target: TargetProfile, part: Profile) -> Any:
    string = dictionary.string
    profile = pb.Profile(
        sample_type=pb.ValueType(type_strindex=string("samples"), unit_strindex=string("count")),
        period_type=pb.ValueType(type_strindex=string("cpu"), unit_strindex=string("nanoseconds")),
        period=part.period_ns,
        time_unix_nano=part.start_ns,
        duration_nano=part.duration_ns,
        profile_id=os.urandom(16),
    )
    for sample in part.samples:
        stack = dictionary.stack(tuple(dictionary.location(sym) for sym in sample.stack))
        attrs = [dictionary.attribute("thread.name", v) for k, v in sample.labels if k == "comm"]
        profile.samples.add(stack_index=stack, values=[sample.count], attribute_indices=attrs)
    scope = pb.ScopeProfiles(scope=common_pb2.InstrumentationScope(name="hostflame", version="0.1.0"),
                             profiles=[profile])
    return pb.ResourceProfiles(resource=_resource(target), scope_profiles=[scope])


class OtlpExporter(RemoteExporter):
    name = "otlp"

    def __init__(self, remote: RemoteConfig) -> None:
        super().__init__(remote, remote.url.rstrip("/") + OTLP_PATH, "application/x-protobuf")

    def encode(self, targets: Sequence[TargetProfile]) -> list[Payload]:
        """Targets batched into requests of at most ``BATCH_SAMPLES`` samples (parts of at most 16 000 samples)."""
        payloads = []
        batch: list[tuple[TargetProfile, Profile]] = []
        count = 0
        for target in targets:
            for part in split_samples(target.profile):
                if batch and count + len(part.samples) > BATCH_SAMPLES:
                    payloads.append(self._payload(batch))
                    batch, count = [], 0
                batch.append((target, part))
                count += len(part.samples)
        if batch:
            payloads.append(self._payload(batch))
        return payloads

    @staticmethod
    def _payload(batch: list[tuple[TargetProfile, Profile]]) -> Payload:
        names = [t.label("service_name") for t, _ in batch]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return Payload(body=build_request(batch).SerializeToString(), description=f"{len(batch)} profiles ({shown})",
                       profiles=len(batch))
