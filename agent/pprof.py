"""Profile builder: one interval's symbolized samples as a gzip-compressed pprof.

Stage: after symbolization and labelling, before the exporters.
In: an ``agent.model.Profile``. Out: ``bytes`` of a gzip-compressed ``perftools.profiles.Profile``
in the Go runtime's CPU shape: sample types [samples/count, cpu/nanoseconds], period type
cpu/nanoseconds, values [n, n * period_ns]. Strings, functions, mappings and locations are
deduplicated and every id is its table index + 1 (string_table[0] is "").

Location addresses are the runtime addresses as sampled (``Symbolized.addr``); any return-address
adjustment happened before symbolization.

The protobuf is written by hand: filling the message classes from Python took calls per
location, line and sample and one per frame of every stack, most of an interval's build. Here a
sample's packed location ids are one C-level join of bytes looked up by ``id(Symbolized)``; each
location, function and string is encoded once per profile from parts cached across profiles
(what a location needs of its ``Symbolized``: address and line fields, function keys, mapping
flags; the symbolizer hands out the same objects interval after interval and to every target
sharing a library or the kernel), and the Profile is the concatenation. Fields go out in
field-number order and zero scalars are left out, as protobuf's serializer does: the bytes equal
what the message classes make of the same tables (tests/pprof_reference.py; a unit test holds
the builder to that).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import Any

from agent.model import FrameKind, Module, Profile, ProfileSample, Symbolized
from agent.proto import profile as pb

__all__ = ["KERNEL_MODULE", "build_pprof", "build_pprof_raw", "gzip_pprof", "parse_pprof"]

# Kernel frames the symbolizer left without a module still belong to the kernel's mapping.
KERNEL_MODULE = Module(path="[kernel.kallsyms]", build_id=b"", start=0, end=0, file_offset=0)
GZIP_LEVEL = 6  # level 9 costs ~2x the time for ~2% smaller files
GZIP_LEVEL_WIRE = 1  # network exporters: measured 22 ms vs 57 ms (level 6) for 50 targets, 718 vs 679 kB


def build_pprof(profile: Profile) -> bytes:
    """The gzip-compressed pprof of ``profile`` (see the module docstring for its shape)."""
    return gzip.compress(build_pprof_raw(profile), compresslevel=GZIP_LEVEL, mtime=0)


def gzip_pprof(raw: bytes, level: int = GZIP_LEVEL_WIRE) -> bytes:
    """``raw`` gzip-compressed; on the wire level 1 (2.5x faster than 6 for ~6 % more bytes)."""
    return gzip.compress(raw, compresslevel=level, mtime=0)


def parse_pprof(data: bytes) -> Any:
    """Decode a pprof, gzip-compressed or not, into a ``perftools.profiles.Profile`` message."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return pb.Profile.FromString(data)


_U64 = (1 << 64) - 1
_SMALL = 4096  # varints of 0 .. _SMALL - 1 come from a table, inline in the hot loops (a call costs ~10x)


def _encode_varint(n: int) -> bytes:
    n &= _U64  # a negative int64 is its 64-bit two's complement: ten bytes
    out = bytearray()
    while n > 127:
        out.append(n & 127 | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_encode_varint(i) for i in range(_SMALL)]


def _varint(n: int) -> bytes:
    """Base-128 varint of ``n``."""
    return _VARINTS[n] if 0 <= n < _SMALL else _encode_varint(n)


def _delimited(tag: bytes, body: bytes) -> bytes:
    return tag + _varint(len(body)) + body


def _scalars(fields: Iterable[tuple[bytes, int]]) -> bytes:
    """Varint fields (tag, value) in order; zeros left out, as proto3 does."""
    return b"".join(tag + _varint(value) for tag, value in fields if value)


# Tags: field number << 3 | wire type (0 varint, 2 length-delimited).
_PROFILE_SAMPLE_TYPE, _PROFILE_SAMPLE, _PROFILE_MAPPING = b"\x0a", b"\x12", b"\x1a"
_PROFILE_LOCATION, _PROFILE_FUNCTION, _PROFILE_STRING = b"\x22", b"\x2a", b"\x32"
_PROFILE_TIME, _PROFILE_DURATION, _PROFILE_PERIOD_TYPE = b"\x48", b"\x50", b"\x5a"
_PROFILE_PERIOD, _PROFILE_COMMENT, _PROFILE_DEFAULT_TYPE = b"\x60", b"\x6a", b"\x70"
_SAMPLE_LOCATIONS, _SAMPLE_VALUES, _SAMPLE_LABEL = b"\x0a", b"\x12", b"\x1a"
_LOCATION_LINE = b"\x22"
_V1, _V2, _V3, _V4, _V5 = b"\x08", b"\x10", b"\x18", b"\x20", b"\x28"  # varint fields 1..10 of any message
_V6, _V7, _V8, _V9, _V10 = b"\x30", b"\x38", b"\x40", b"\x48", b"\x50"

# Mapping flags a location sets (bits), in Mapping's field order from has_functions (7).
_HAS_FUNCTIONS, _HAS_FILENAMES, _HAS_LINE_NUMBERS, _HAS_INLINE_FRAMES = 1, 2, 4, 8

_FunctionKey = tuple[str, str, str]  # name, system_name, filename
# What a location's bytes need of its Symbolized in any profile: the object itself (so its id()
# is never another object's while cached), its mapping's module, the address field, per frame
# the function and the Line fields after function_id, and the mapping flags it sets.
_SymbolParts = tuple[Symbolized, Module | None, bytes, tuple[tuple[_FunctionKey, bytes], ...], int]

# Kept across builds, since the symbolizer hands out the same Symbolized objects interval after
# interval (and to every target that shares a library or the kernel): symbols' parts by
# id(Symbolized) and strings' string_table fields. Pure caches, each emptied when full: ~450
# bytes a symbol, so at most ~15 MB; 50 busy targets have ~10 000 locations an interval.
_PARTS: dict[int, _SymbolParts] = {}
_STRING_FIELDS: dict[str, bytes] = {}
_CACHE_MAX = 1 << 15


def _parts(sym: Symbolized) -> _SymbolParts:
    module = sym.module
    if module is None and sym.kind is FrameKind.KERNEL:
        module = KERNEL_MODULE
    frames = sym.frames
    flags = _HAS_FUNCTIONS if sym.named or (module is not None and module.has_functions) else 0
    lines = []
    for f in frames:
        lines.append(((f.function, f.system_name, f.file), _V2 + _varint(f.line) if f.line else b""))
        flags |= (_HAS_FILENAMES if f.file else 0) | (_HAS_LINE_NUMBERS if f.line else 0)
    if len(frames) > 1:
        flags |= _HAS_INLINE_FRAMES
    parts = (sym, module, _V3 + _varint(sym.addr) if sym.addr else b"", tuple(lines), flags)
    if len(_PARTS) >= _CACHE_MAX:
        _PARTS.clear()
    _PARTS[id(sym)] = parts
    return parts


def _string_field(value: str) -> bytes:
    data = value.encode()
    field = _PROFILE_STRING + _varint(len(data)) + data
    if len(_STRING_FIELDS) >= _CACHE_MAX:
        _STRING_FIELDS.clear()
    _STRING_FIELDS[value] = field
    return field


class _Encoder:
    """The deduplicating tables of one pprof under construction, kept as encoded bytes; every
    id is its table index + 1, string_table[0] is ""."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {"": 0}
        self.functions: dict[_FunctionKey, bytes] = {}  # -> field 1 (id) of its Function and Line
        self.mappings: list[Module] = []
        self.mapping_by_module: dict[Module, int] = {}
        self.mapping_by_obj: dict[int, int] = {}  # id(Module) -> mapping id; objects outlive the build
        self.mapping_fields = [b""]  # by mapping id: a Location's mapping_id field (none for 0)
        self.mapping_flags = [0]  # by mapping id
        self.locations: list[bytes] = []  # encoded Location fields of the Profile
        self.location_by_key: dict[tuple[object, ...], bytes] = {}
        self.location_by_obj: dict[int, bytes] = {}  # id(Symbolized) -> varint of its location id

    def string(self, value: str) -> int:
        return self.strings.setdefault(value, len(self.strings))

    def mapping(self, module: Module) -> int:
        mapping_id = self.mapping_by_module.get(module)
        if mapping_id is None:
            self.mappings.append(module)
            mapping_id = self.mapping_by_module[module] = len(self.mappings)
            self.mapping_fields.append(_V2 + _varint(mapping_id))
            self.mapping_flags.append(0)
        self.mapping_by_obj[id(module)] = mapping_id
        return mapping_id

    def add_locations(self, stack: tuple[Symbolized, ...]) -> None:
        """Give every location of ``stack`` not seen yet in this profile its id and encoding.
        The hot loop of a build: once per location, so varints come from the table inline."""
        known, by_key, functions, locations = self.location_by_obj, self.location_by_key, self.functions, self.locations
        mapping_by_obj, mapping_flags, varints = self.mapping_by_obj, self.mapping_flags, _VARINTS
        for sym in stack:
            if id(sym) in known:
                continue
            parts = _PARTS.get(id(sym))
            if parts is None or parts[0] is not sym:
                parts = _parts(sym)
            _, module, address, lines, flags = parts
            if module is not None:
                mapping_id = mapping_by_obj.get(id(module)) or self.mapping(module)
                key: tuple[object, ...] = (mapping_id, sym.addr)
            else:  # no mapping: the address alone is ambiguous across processes, the frames are not
                mapping_id = 0
                key = (0, sym.addr, sym.frames)
            location_id = by_key.get(key)
            if location_id is None:
                n = len(locations) + 1
                location_id = by_key[key] = varints[n] if n < _SMALL else _encode_varint(n)
                body = [_V1, location_id, self.mapping_fields[mapping_id], address]
                for function_key, tail in lines:
                    function_field = functions.get(function_key)  # Line.function_id, tag included
                    if function_field is None:
                        n = len(functions) + 1
                        function_field = functions[function_key] = _V1 + (varints[n] if n < _SMALL else
                                                                           _encode_varint(n))
                    body += (_LOCATION_LINE, varints[len(function_field) + len(tail)], function_field, tail)
                data = b"".join(body)
                n = len(data)
                locations.append(_PROFILE_LOCATION + (varints[n] if n < _SMALL else _encode_varint(n)) + data)
                mapping_flags[mapping_id] |= flags
            known[id(sym)] = location_id

    def add_samples(self, samples: Iterable[ProfileSample], period_ns: int, out: list[bytes]) -> None:
        """Append each sample's Sample field to ``out`` (in pieces; joined with the rest at the end)."""
        join, varints, location_of = b"".join, _VARINTS, self.location_by_obj.__getitem__
        tails: dict[tuple[object, ...], bytes] = {}  # (count, labels, num_labels) -> a Sample's fields 2 and 3
        for sample in samples:
            stack = sample.stack
            try:
                packed = join(map(location_of, map(id, stack)))  # packed location ids: no Python per frame
            except KeyError:  # a location first seen in this sample
                self.add_locations(stack)
                packed = join(map(location_of, map(id, stack)))
            tail_key = (sample.count, sample.labels, sample.num_labels)
            tail = tails.get(tail_key)
            if tail is None:
                tail = tails[tail_key] = self.encoded_sample_tail(sample.count * period_ns, sample)
            n = len(packed)
            if n:
                packed_size = varints[n] if n < _SMALL else _encode_varint(n)
                n += 1 + len(packed_size) + len(tail)
                out += (_PROFILE_SAMPLE, varints[n] if n < _SMALL else _encode_varint(n), _SAMPLE_LOCATIONS,
                        packed_size, packed, tail)
            else:
                out.append(_delimited(_PROFILE_SAMPLE, tail))

    def encoded_mappings(self) -> Iterable[bytes]:
        string = self.string
        for mapping_id, module in enumerate(self.mappings, start=1):
            flags = self.mapping_flags[mapping_id]
            yield _delimited(_PROFILE_MAPPING, _scalars((
                (_V1, mapping_id), (_V2, module.start), (_V3, module.end), (_V4, module.file_offset),
                (_V5, string(module.path)), (_V6, string(module.build_id.hex())), (_V7, flags & _HAS_FUNCTIONS),
                (_V8, flags & _HAS_FILENAMES and 1), (_V9, flags & _HAS_LINE_NUMBERS and 1),
                (_V10, flags & _HAS_INLINE_FRAMES and 1))))

    def encoded_functions(self) -> Iterable[bytes]:
        strings, varints = self.strings, _VARINTS
        index = strings.setdefault
        for (name, system_name, filename), id_field in self.functions.items():
            data = id_field
            if name:
                i = index(name, len(strings))
                data += _V2 + (varints[i] if i < _SMALL else _encode_varint(i))
            if system_name:
                i = index(system_name, len(strings))
                data += _V3 + (varints[i] if i < _SMALL else _encode_varint(i))
            if filename:
                i = index(filename, len(strings))
                data += _V4 + (varints[i] if i < _SMALL else _encode_varint(i))
            yield _PROFILE_FUNCTION + varints[len(data)] + data  # < 50 bytes

    def encoded_strings(self) -> list[bytes]:
        known = _STRING_FIELDS.get
        return [known(value) or _string_field(value) for value in self.strings]  # dicts keep the index order

    def encoded_sample_tail(self, cpu_ns: int, sample: ProfileSample) -> bytes:
        """A Sample's values [count, cpu_ns] and labels (its fields after the location ids)."""
        string = self.string
        out = [_delimited(_SAMPLE_VALUES, _varint(sample.count) + _varint(cpu_ns))]
        out.extend(_delimited(_SAMPLE_LABEL, _scalars(((_V1, string(k)), (_V2, string(v))))) for k, v in sample.labels)
        out.extend(_delimited(_SAMPLE_LABEL, _scalars(((_V1, string(k)), (_V3, v)))) for k, v in sample.num_labels)
        return b"".join(out)


def build_pprof_raw(profile: Profile) -> bytes:
    """The serialized, uncompressed pprof of ``profile`` (what servers' size limits count)."""
    enc = _Encoder()
    string = enc.string
    period_ns = profile.period_ns
    samples_type = _scalars(((_V1, string("samples")), (_V2, string("count"))))
    cpu_type = _scalars(((_V1, string("cpu")), (_V2, string("nanoseconds"))))
    comments = [string(c) for c in _comments(profile)]

    out = [_delimited(_PROFILE_SAMPLE_TYPE, samples_type), _delimited(_PROFILE_SAMPLE_TYPE, cpu_type)]
    enc.add_samples(profile.samples, period_ns, out)
    out.extend(enc.encoded_mappings())
    out.extend(enc.locations)
    out.extend(enc.encoded_functions())  # names are strings too: before the string table goes out
    out.extend(enc.encoded_strings())
    out.append(_scalars(((_PROFILE_TIME, profile.start_ns), (_PROFILE_DURATION, profile.duration_ns))))
    out.append(_delimited(_PROFILE_PERIOD_TYPE, cpu_type))
    out.append(_scalars(((_PROFILE_PERIOD, period_ns),)))
    if comments:
        out.append(_delimited(_PROFILE_COMMENT, b"".join(map(_varint, comments))))
    out.append(_scalars(((_PROFILE_DEFAULT_TYPE, string("cpu")),)))
    return b"".join(out)


def _comments(profile: Profile) -> list[str]:
    comments = [f"hostflame: host={profile.host}"]
    comments.extend(f"{name}={value}" for name, value in sorted(profile.counters.items()))
    return comments
