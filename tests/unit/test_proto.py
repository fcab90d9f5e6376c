"""Schemas built from field tables: wire-compatible with protoc's output, isolated from each other."""

from __future__ import annotations

import pytest

from agent.proto import build_schema
from agent.proto.profile import Profile


def test_profile_fields_encode_with_the_numbers_of_profile_proto() -> None:
    # GIVEN a Profile with a sample (field 2: location_id 1 packed, value 2 packed) and a string
    msg = Profile()
    msg.sample.add(location_id=[1, 2], value=[3])
    msg.string_table.extend(["", "a"])
    msg.period = 5
    # WHEN serialized THEN the bytes are the ones the protobuf encoding rules give by hand:
    # 0x12 = field 2 (len 7); 0x0a = field 1 (len) packed [1, 2]; 0x12 = field 2 packed [3];
    # 0x32 = field 6 strings ""/"a"; 0x60 = field 12 varint 5
    assert msg.SerializeToString().hex() == "1207" "0a020102" "120103" "3200" "320161" "6005"


def test_schemas_with_the_same_names_do_not_clash() -> None:
    # GIVEN two schemas both naming a message Profile, in different packages
    a = build_schema("test.a", "a.proto", {"Profile": ("string name = 1",)})["Profile"]
    b = build_schema("test.b", "b.proto", {"Profile": ("repeated Item items = 1",), "Item": ("int64 n = 1",)})
    # WHEN used THEN each has its own fields
    assert a(name="x").name == "x"
    assert [i.n for i in b["Profile"](items=[b["Item"](n=4)]).items] == [4]


def test_a_malformed_field_spec_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad field spec"):
        build_schema("test.c", "c.proto", {"M": ("int64 = 1",)})
