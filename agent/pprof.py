"""Profile builder: one interval's symbolized samples as a gzip-compressed pprof.

Stage: after symbolization and labelling, before the exporters.
In: an ``agent.model.Profile``. Out: ``bytes`` of a gzip-compressed ``perftools.profiles.Profile``
in the Go runtime's CPU shape: sample types [samples/count, cpu/nanoseconds], period type
cpu/nanoseconds, values [n, n * period_ns]. Strings, functions, mappings and locations are
deduplicated and every id is its table index + 1 (string_table[0] is "").

Location addresses are the runtime addresses as sampled (``Symbolized.addr``); any return-address
adjustment happened before symbolization.

The protobuf is written by hand (``agent.pprof_wire``): filling the message classes from Python
took calls per location, line and sample and one per frame of every stack, most of an
interval's build. What a location needs of its ``Symbolized`` (address and line fields, mapping
flags, its location and functions as hashable keys, its module as a small int) is cached across
builds, as the symbolizer hands out the same objects interval after interval and to every target
sharing a library or the kernel. A build then works in columns: one list per table field, made and joined
by C-level passes (``map``, ``zip``, ``dict.fromkeys`` for first-use order) instead of Python
statements per row; a sample's packed location ids are one join of bytes looked up by
``id(Symbolized)``. Fields go out in field-number order and zero scalars are left out, as
protobuf's serializer does: the bytes equal what the message classes make of the same tables
(tests/pprof_reference.py; a unit test holds the builder to that).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, count, islice, repeat
from operator import add, attrgetter, itemgetter
from typing import Any, cast

from agent.model import FrameKind, Module, Profile, ProfileSample, Symbolized
from agent.pprof_wire import (
    LOCATION_LINE,
    PROFILE_COMMENT,
    PROFILE_DEFAULT_TYPE,
    PROFILE_DURATION,
    PROFILE_FUNCTION,
    PROFILE_LOCATION,
    PROFILE_MAPPING,
    PROFILE_PERIOD,
    PROFILE_PERIOD_TYPE,
    PROFILE_SAMPLE,
    PROFILE_SAMPLE_TYPE,
    PROFILE_STRING,
    PROFILE_TIME,
    SAMPLE_LABEL,
    SAMPLE_LOCATIONS,
    SAMPLE_VALUES,
    SMALL,
    V1,
    V2,
    V3,
    V4,
    V5,
    V6,
    V7,
    V8,
    V9,
    V10,
    VARINTS,
    delimited,
    encode_varint,
    scalars,
    sizes,
    varint,
    varints_from_one,
)
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


# Mapping flags a location sets (bits), in Mapping's field order from has_functions (7), and
# the Mapping fields of each combination.
_HAS_FUNCTIONS, _HAS_FILENAMES, _HAS_LINE_NUMBERS, _HAS_INLINE_FRAMES = 1, 2, 4, 8
_FLAG_FIELDS = [b"".join(tag + b"\x01" for bit, tag in zip((1, 2, 4, 8), (V7, V8, V9, V10), strict=True) if bits & bit)
                for bits in range(16)]

_FunctionKey = tuple[str, str, str]  # name, system_name, filename
# A symbol's parts: the object itself (held, so no other object has its id() while cached), its
# location (module key and address; without a module 0, address and frames), its module's key
# (0: no mapping), the mapping flags it sets, its Location's address field, and per line its
# function and the Line's fields after function_id.
_Parts = tuple[Symbolized, tuple[object, ...], int, int, bytes, tuple[tuple[_FunctionKey, bytes], ...]]
_LOCATION_KEY, _MODULE_KEY, _FLAGS, _ADDRESS, _LINES = (itemgetter(i) for i in range(1, 6))
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)
_STACK = attrgetter("stack")


class _SymbolCache:
    """What builds need of each Symbolized, kept across builds: parts by id(Symbolized), modules
    interned to small ints (hashing a Module runs Python code), strings' string_table fields.

    Bounded, ~500 bytes a symbol with its name: parts in two generations of ``max_symbols`` at
    most. After every ``window`` lookups (default: four times ``max_symbols``, several
    intervals, so moving symbols up costs little) the current generation becomes the previous
    one and the previous one goes: a symbol not looked up in two windows is let go, and its
    object with it (after the symbolizer sheds its caches, the old symbols do not stay pinned
    here); one found in the previous generation moves up. A full current generation adds
    nothing (a miss is encoded all the same). Modules and strings are emptied when they reach
    ``max_symbols`` (modules with the parts, which hold their keys)."""

    def __init__(self, max_symbols: int, window: int = 0) -> None:
        self.max_symbols = max_symbols
        self.window = window or 4 * max_symbols
        self._reset()

    def _reset(self) -> None:
        self.parts: dict[int, _Parts] = {}
        self.previous: dict[int, _Parts] = {}  # the last window's generation
        self.lookups = 0  # in this window
        self.module_keys: dict[Module, int] = {}
        # By key from 1 (0 is "no mapping"): what a Mapping needs of the module, path, build id
        # and its fields 2-4 (the range and file offset).
        self.modules: list[tuple[str, str, bytes]] = [("", "", b"")]
        self.string_fields: dict[str, bytes] = {}

    def age(self) -> None:
        """Before a build: end the window when it is over, empty what is full."""
        if len(self.modules) > self.max_symbols:  # each process has its own ranges
            self._reset()
        if self.lookups >= self.window:
            self.previous, self.parts, self.lookups = self.parts, {}, 0
        if len(self.string_fields) >= self.max_symbols:  # cheap to make again
            self.string_fields.clear()

    def parts_of(self, ids: list[int], samples: Sequence[ProfileSample]) -> list[_Parts]:
        """The parts of the symbols with these ids, in order (``samples`` hold the symbols). An id
        found is its symbol's: the cache holds each object it has seen, so no other has its id."""
        parts = list(map(self.parts.get, ids))
        self.lookups += len(ids)
        if None in parts:
            frames = list(chain.from_iterable(map(_STACK, samples)))
            symbols = dict(zip(map(id, frames), frames, strict=True))
            parts = [p or self._find(i, symbols) for p, i in zip(parts, ids, strict=True)]
        return cast(list[_Parts], parts)  # no None in it

    def _find(self, sym_id: int, symbols: dict[int, Symbolized]) -> _Parts:
        parts = self.previous.get(sym_id) or self._add(symbols[sym_id])
        if len(self.parts) < self.max_symbols:
            self.parts[sym_id] = parts
        return parts

    def _add(self, sym: Symbolized) -> _Parts:
        module = sym.module
        if module is None and sym.kind is FrameKind.KERNEL:
            module = KERNEL_MODULE
        if module is not None:
            module_key = self.module_keys.get(module)
            if module_key is None:
                module_key = self.module_keys[module] = len(self.modules)
                self.modules.append((module.path, module.build_id.hex(), scalars(
                    ((V2, module.start), (V3, module.end), (V4, module.file_offset)))))
            location: tuple[object, ...] = (module_key, sym.addr)
        else:  # no mapping: the address alone is ambiguous across processes, the frames are not
            module_key = 0
            location = (0, sym.addr, sym.frames)
        flags = _HAS_FUNCTIONS if sym.named or (module is not None and module.has_functions) else 0
        lines = []
        for f in sym.frames:
            lines.append(((f.function, f.system_name, f.file), V2 + varint(f.line) if f.line else b""))
            flags |= (_HAS_FILENAMES if f.file else 0) | (_HAS_LINE_NUMBERS if f.line else 0)
        if len(sym.frames) > 1:
            flags |= _HAS_INLINE_FRAMES
        return (sym, location, module_key, flags, V3 + varint(sym.addr) if sym.addr else b"", tuple(lines))

    def string_field(self, value: str) -> bytes:
        data = value.encode()
        field = PROFILE_STRING + varint(len(data)) + data
        if len(self.string_fields) < self.max_symbols:
            self.string_fields[value] = field
        return field


# ~4 MB a generation (and the symbols it holds), ~5 % of the default 80 MB memory budget; both
# generations mostly hold the same symbols. The benchmark interval's 50 targets have 7 747.
_CACHE = _SymbolCache(max_symbols=1 << 13)
_LOCK = threading.Lock()  # a build reads module keys that emptying the cache would renumber


class _Encoder:
    """One pprof's tables as columns of encoded fields; every id is its table index + 1 in order
    of first use, string_table[0] is ""."""

    def __init__(self, cache: _SymbolCache) -> None:
        self.cache = cache
        self.strings: dict[str, int] = {"": 0}
        self.locations: list[_Parts] = []  # by location id - 1: the first symbol at each location
        self.location_ids: list[bytes] = []  # varints, by location id - 1
        self.location_of: dict[int, bytes] = {}  # id(Symbolized) -> varint of its location id
        self.location_mapping_fields: list[bytes] = []  # a Location's mapping_id field, by location id - 1
        self.function_order: list[_FunctionKey] = []  # by function id - 1
        self.function_id_fields: list[bytes] = []  # a Function's id field (a Line's function_id), by id - 1

    def string(self, value: str) -> int:
        return self.strings.setdefault(value, len(self.strings))

    def number_locations(self, samples: Sequence[ProfileSample]) -> None:
        """Locations in order of first use (samples in order, each stack leaf first)."""
        symbols = list(dict.fromkeys(map(id, chain.from_iterable(map(_STACK, samples)))))  # ids, first use order
        parts = self.cache.parts_of(symbols, samples)
        keys = list(map(_LOCATION_KEY, parts))
        order = dict.fromkeys(keys)
        self.location_ids = varints_from_one(len(order))
        if len(order) == len(parts):  # no two symbols at one location: the usual case
            self.locations = parts
            self.location_of = dict(zip(symbols, self.location_ids, strict=True))
        else:
            first = dict(zip(keys[::-1], parts[::-1], strict=True))  # reversed, so the first symbol's parts win
            self.locations = list(map(first.__getitem__, order))
            id_of = dict(zip(order, self.location_ids, strict=True))
            self.location_of = dict(zip(symbols, map(id_of.__getitem__, keys), strict=True))

    def sample_fields(self, samples: Iterable[ProfileSample], period_ns: int, out: list[bytes]) -> None:
        """Append each sample's Sample field to ``out``, in pieces (joined with the rest at the end)."""
        join, varints, location_of = b"".join, VARINTS, self.location_of.__getitem__
        tails: dict[tuple[object, ...], bytes] = {}  # (count, labels, num_labels) -> a Sample's fields 2 and 3
        for sample in samples:
            packed = join(map(location_of, map(id, sample.stack)))  # packed location ids: no Python per frame
            tail_key = (sample.count, sample.labels, sample.num_labels)
            tail = tails.get(tail_key)
            if tail is None:
                tail = tails[tail_key] = self._sample_tail(sample.count * period_ns, sample)
            n = len(packed)
            if n:
                packed_size = varints[n] if n < SMALL else encode_varint(n)
                n += 1 + len(packed_size) + len(tail)
                out += (PROFILE_SAMPLE, varints[n] if n < SMALL else encode_varint(n), SAMPLE_LOCATIONS, packed_size,
                        packed, tail)
            else:
                out.append(delimited(PROFILE_SAMPLE, tail))

    def _sample_tail(self, cpu_ns: int, sample: ProfileSample) -> bytes:
        """A Sample's values [count, cpu_ns] and labels (its fields after the location ids)."""
        string = self.string
        out = [delimited(SAMPLE_VALUES, varint(sample.count) + varint(cpu_ns))]
        out.extend(delimited(SAMPLE_LABEL, scalars(((V1, string(k)), (V2, string(v))))) for k, v in sample.labels)
        out.extend(delimited(SAMPLE_LABEL, scalars(((V1, string(k)), (V3, v)))) for k, v in sample.num_labels)
        return b"".join(out)

    def mapping_fields(self) -> list[bytes]:
        """Mappings in order of first use, flagged by what their locations have."""
        module_keys = list(map(_MODULE_KEY, self.locations))
        order = dict.fromkeys(module_keys)
        order.pop(0, None)
        field_of = dict(zip(order, map(V2.__add__, varints_from_one(len(order))), strict=True))
        field_of[0] = b""
        self.location_mapping_fields = list(map(field_of.__getitem__, module_keys))
        flags = dict.fromkeys(order, 0)
        for module_key, bits in set(zip(module_keys, map(_FLAGS, self.locations), strict=True)):  # few distinct pairs
            if module_key:
                flags[module_key] |= bits
        string, out = self.string, []
        for mapping_id, (module_key, bits) in enumerate(flags.items(), start=1):
            path, build_id, range_fields = self.cache.modules[module_key]
            body = V1 + varint(mapping_id) + range_fields + scalars(((V5, string(path)), (V6, string(build_id))))
            out.append(delimited(PROFILE_MAPPING, body + _FLAG_FIELDS[bits]))
        return out

    def location_fields(self) -> list[bytes]:
        """Each location's Location (after ``mapping_fields``); numbers the functions in order of first use."""
        lines_of = list(map(_LINES, self.locations))
        lines = list(chain.from_iterable(lines_of))
        function_keys, tails = list(map(_FIRST, lines)), list(map(_SECOND, lines))
        self.function_order = list(dict.fromkeys(function_keys))
        self.function_id_fields = list(map(V1.__add__, varints_from_one(len(self.function_order))))
        id_field_of = dict(zip(self.function_order, self.function_id_fields, strict=True))
        line_ids = list(map(id_field_of.__getitem__, function_keys))
        line_sizes = map(VARINTS.__getitem__, map(add, map(len, line_ids), map(len, tails)))  # < 24 bytes
        line_fields = list(map(b"".join, zip(repeat(LOCATION_LINE), line_sizes, line_ids, tails)))
        if len(line_fields) != len(lines_of):  # inlined frames: join each location's lines
            rest = iter(line_fields)
            line_fields = [b"".join(islice(rest, len(group))) for group in lines_of]
        bodies = list(map(b"".join, zip(repeat(V1), self.location_ids, self.location_mapping_fields,
                                        map(_ADDRESS, self.locations), line_fields)))
        return list(map(b"".join, zip(repeat(PROFILE_LOCATION), sizes(bodies), bodies)))

    def function_fields(self) -> list[bytes]:
        """Each function's Function (after ``location_fields``); its strings join the table in
        order: name, system name, file."""
        names = self.function_order
        new = dict.fromkeys(chain.from_iterable(names))
        for known in self.strings:  # the few strings so far
            new.pop(known, None)
        self.strings.update(zip(new, count(len(self.strings))))
        bodies = list(map(b"".join, zip(self.function_id_fields, self._index_fields(V2, map(_FIRST, names)),
                                        self._index_fields(V3, map(_SECOND, names)),
                                        self._index_fields(V4, map(_THIRD, names)), strict=True)))
        return list(map(b"".join, zip(repeat(PROFILE_FUNCTION), sizes(bodies), bodies)))

    def _index_fields(self, tag: bytes, values: Iterable[str]) -> Iterator[bytes]:
        """``tag`` and each value's string index; nothing for "" (index 0: proto3 leaves zeros out)."""
        indexes = list(map(self.strings.__getitem__, values))
        small = len(self.strings) <= SMALL
        if small and 0 not in indexes:  # names: mostly each its own
            return map(tag.__add__, map(VARINTS.__getitem__, indexes))
        distinct = set(indexes)  # system names and files: mostly "" or a few
        field_of = dict(zip(distinct, map(tag.__add__, map(VARINTS.__getitem__ if small else varint, distinct)),
                            strict=True))
        field_of[0] = b""
        return map(field_of.__getitem__, indexes)

    def string_fields(self) -> list[bytes]:
        fields = list(map(self.cache.string_fields.get, self.strings))  # dicts keep the index order
        if None in fields:
            return [f or self.cache.string_field(s) for f, s in zip(fields, self.strings, strict=True)]
        return cast(list[bytes], fields)  # no None in it


def shed_cache() -> None:
    """Let every cached symbol go now (the resource governor sheds caches): the next build
    encodes them afresh, and the symbolizer's old objects are no longer held here."""
    with _LOCK:
        _CACHE._reset()


def build_pprof_raw(profile: Profile) -> bytes:
    """The serialized, uncompressed pprof of ``profile`` (what servers' size limits count)."""
    with _LOCK:
        _CACHE.age()
        return _encode(profile, _Encoder(_CACHE))


def _encode(profile: Profile, enc: _Encoder) -> bytes:
    string = enc.string
    samples_type = scalars(((V1, string("samples")), (V2, string("count"))))
    cpu_type = scalars(((V1, string("cpu")), (V2, string("nanoseconds"))))
    comments = [string(c) for c in _comments(profile)]
    out = [delimited(PROFILE_SAMPLE_TYPE, samples_type), delimited(PROFILE_SAMPLE_TYPE, cpu_type)]
    enc.number_locations(profile.samples)
    enc.sample_fields(profile.samples, profile.period_ns, out)  # label strings join the table here,
    out += enc.mapping_fields()  # then mapping strings,
    out += enc.location_fields()
    out += enc.function_fields()  # then function strings
    out += enc.string_fields()
    out.append(scalars(((PROFILE_TIME, profile.start_ns), (PROFILE_DURATION, profile.duration_ns))))
    out.append(delimited(PROFILE_PERIOD_TYPE, cpu_type))
    out.append(scalars(((PROFILE_PERIOD, profile.period_ns),)))
    if comments:
        out.append(delimited(PROFILE_COMMENT, b"".join(map(varint, comments))))
    out.append(scalars(((PROFILE_DEFAULT_TYPE, string("cpu")),)))
    return b"".join(out)


def _comments(profile: Profile) -> list[str]:
    comments = [f"hostflame: host={profile.host}"]
    comments.extend(f"{name}={value}" for name, value in sorted(profile.counters.items()))
    return comments
