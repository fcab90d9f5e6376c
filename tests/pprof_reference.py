"""A reference pprof builder for tests: the same tables as ``agent.pprof`` fills, but built with
protobuf's message classes and serialized by protobuf, plainly and slowly.

The agent writes the wire format by hand for speed; tests compare its bytes with these. The
rules are the builder's documented ones: tables deduplicated in order of first use (samples in
order, frames leaf first, a location's lines innermost first), every id its index + 1,
string_table[0] "", strings numbered as first used: sample types, comments, labels, then the
mapping and function strings as those tables are written.
"""

from __future__ import annotations

from typing import Any

from agent.model import FrameKind, Module, Profile, Symbolized
from agent.pprof import KERNEL_MODULE
from agent.proto import profile as pb


class _Tables:
    def __init__(self) -> None:
        self.strings: dict[str, int] = {"": 0}
        self.functions: dict[tuple[str, str, str], int] = {}
        self.mapping_ids: dict[Module, int] = {}
        self.mapping_flags: list[dict[str, bool]] = []  # has_* of mapping id - 1
        self.locations: dict[tuple[object, ...], tuple[int, int, int, list[tuple[int, int]]]] = {}  # id, mapping, addr

    def string(self, value: str) -> int:
        return self.strings.setdefault(value, len(self.strings))

    def mapping_id(self, module: Module) -> int:
        if module not in self.mapping_ids:
            self.mapping_ids[module] = len(self.mapping_ids) + 1
            self.mapping_flags.append(dict.fromkeys(
                ("has_functions", "has_filenames", "has_line_numbers", "has_inline_frames"), False))
        return self.mapping_ids[module]

    def location_id(self, sym: Symbolized) -> int:
        module = sym.module if sym.module is not None or sym.kind is not FrameKind.KERNEL else KERNEL_MODULE
        mapping_id = self.mapping_id(module) if module is not None else 0
        key: tuple[object, ...] = (mapping_id, sym.addr) if mapping_id else (0, sym.addr, sym.frames)
        if key not in self.locations:
            lines = [(self.functions.setdefault((f.function, f.system_name, f.file), len(self.functions) + 1), f.line)
                     for f in sym.frames]
            self.locations[key] = (len(self.locations) + 1, mapping_id, sym.addr, lines)
            if module is not None:
                flags = self.mapping_flags[mapping_id - 1]
                flags["has_functions"] |= sym.named or module.has_functions
                flags["has_filenames"] |= any(f.file for f in sym.frames)
                flags["has_line_numbers"] |= any(f.line for f in sym.frames)
                flags["has_inline_frames"] |= len(sym.frames) > 1
        return self.locations[key][0]


def reference_message(profile: Profile) -> Any:
    """``profile`` as a ``perftools.profiles.Profile`` message."""
    tables = _Tables()
    string = tables.string
    out = pb.Profile()
    out.sample_type.add(type=string("samples"), unit=string("count"))
    out.sample_type.add(type=string("cpu"), unit=string("nanoseconds"))
    out.comment.extend(string(c) for c in [f"hostflame: host={profile.host}",
                                           *(f"{k}={v}" for k, v in sorted(profile.counters.items()))])
    for sample in profile.samples:
        location_ids = [tables.location_id(sym) for sym in sample.stack]
        labels = [pb.Label(key=string(k), str=string(v)) for k, v in sample.labels]
        labels += [pb.Label(key=string(k), num=v) for k, v in sample.num_labels]
        out.sample.add(location_id=location_ids, value=[sample.count, sample.count * profile.period_ns], label=labels)
    for module, mapping_id in tables.mapping_ids.items():
        flags = tables.mapping_flags[mapping_id - 1]
        out.mapping.add(id=mapping_id, memory_start=module.start, memory_limit=module.end,
                        file_offset=module.file_offset, filename=string(module.path),
                        build_id=string(module.build_id.hex()), **flags)
    for location_id, mapping_id, address, lines in tables.locations.values():
        out.location.add(id=location_id, mapping_id=mapping_id, address=address,
                         line=[pb.Line(function_id=f, line=n) for f, n in lines])
    for (name, system_name, filename), function_id in tables.functions.items():
        out.function.add(id=function_id, name=string(name), system_name=string(system_name),
                         filename=string(filename))
    out.string_table.extend(tables.strings)
    out.time_nanos = profile.start_ns
    out.duration_nanos = profile.duration_ns
    out.period_type.type = string("cpu")
    out.period_type.unit = string("nanoseconds")
    out.period = profile.period_ns
    out.default_sample_type = string("cpu")
    return out
