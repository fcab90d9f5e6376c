"""Protobuf wire-format pieces for the hand-written pprof (``agent.pprof``): varints, tags, fields.

Stage: inside the profile builder. In: integers and already-encoded bytes. Out: bytes as
protobuf's serializer writes them: base-128 varints (a negative int64 as its 64-bit two's
complement, ten bytes), scalar fields left out when zero, length-delimited fields. Tags are
``field number << 3 | wire type`` (0 varint, 2 length-delimited) for ``perftools.profiles``
(field numbers in shared/protocols.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "LOCATION_LINE", "PROFILE_COMMENT", "PROFILE_DEFAULT_TYPE", "PROFILE_DURATION", "PROFILE_FUNCTION",
    "PROFILE_LOCATION", "PROFILE_MAPPING", "PROFILE_PERIOD", "PROFILE_PERIOD_TYPE", "PROFILE_SAMPLE",
    "PROFILE_SAMPLE_TYPE", "PROFILE_STRING", "PROFILE_TIME", "SAMPLE_LABEL", "SAMPLE_LOCATIONS", "SAMPLE_VALUES",
    "SMALL", "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "VARINTS", "delimited", "encode_varint",
    "scalars", "sizes", "varint", "varints_from_one",
]

_U64 = (1 << 64) - 1
SMALL = 4096  # varints of 0 .. SMALL - 1 come from a table: a lookup costs a tenth of a call


def encode_varint(n: int) -> bytes:
    n &= _U64
    out = bytearray()
    while n > 127:
        out.append(n & 127 | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


VARINTS = [encode_varint(i) for i in range(SMALL)]


def varint(n: int) -> bytes:
    return VARINTS[n] if 0 <= n < SMALL else encode_varint(n)


def varints_from_one(n: int) -> list[bytes]:
    """The varints of 1 .. n: a table's ids."""
    return VARINTS[1:n + 1] if n < SMALL else VARINTS[1:] + [encode_varint(i) for i in range(SMALL, n + 1)]


def sizes(items: Sequence[bytes]) -> list[bytes]:
    """The varint of each item's length (one C-level pass when all are short)."""
    lengths = list(map(len, items))
    if not lengths or max(lengths) < SMALL:
        return list(map(VARINTS.__getitem__, lengths))
    return list(map(varint, lengths))


def delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def scalars(fields: Iterable[tuple[bytes, int]]) -> bytes:
    """Varint fields (tag, value) in order; zeros left out, as proto3 does."""
    return b"".join(tag + varint(value) for tag, value in fields if value)


# Varint fields 1..10 of any message.
V1, V2, V3, V4, V5 = b"\x08", b"\x10", b"\x18", b"\x20", b"\x28"
V6, V7, V8, V9, V10 = b"\x30", b"\x38", b"\x40", b"\x48", b"\x50"
# Length-delimited fields of Profile, Sample and Location.
PROFILE_SAMPLE_TYPE, PROFILE_SAMPLE, PROFILE_MAPPING = b"\x0a", b"\x12", b"\x1a"
PROFILE_LOCATION, PROFILE_FUNCTION, PROFILE_STRING = b"\x22", b"\x2a", b"\x32"
PROFILE_PERIOD_TYPE, PROFILE_COMMENT = b"\x5a", b"\x6a"
SAMPLE_LOCATIONS, SAMPLE_VALUES, SAMPLE_LABEL = b"\x0a", b"\x12", b"\x1a"
LOCATION_LINE = b"\x22"
# Varint fields of Profile.
PROFILE_TIME, PROFILE_DURATION, PROFILE_PERIOD, PROFILE_DEFAULT_TYPE = b"\x48", b"\x50", b"\x60", b"\x70"
