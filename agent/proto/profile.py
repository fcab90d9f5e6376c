"""The pprof schema (google/pprof ``proto/profile.proto``, package ``perftools.profiles``).

Stage: shared by the profile builder (``agent.pprof``) and anything that reads pprof back.
In: nothing. Out: the message classes ``Profile``, ``ValueType``, ``Sample``, ``Label``,
``Mapping``, ``Location``, ``Line`` and ``Function``. Field numbers as in protocols.md.
"""

from __future__ import annotations

from typing import Any

from agent.proto import build_schema

PROFILE_FIELDS: dict[str, tuple[str, ...]] = {
    "Profile": (
        "repeated ValueType sample_type = 1",
        "repeated Sample sample = 2",
        "repeated Mapping mapping = 3",
        "repeated Location location = 4",
        "repeated Function function = 5",
        "repeated string string_table = 6",
        "int64 drop_frames = 7",
        "int64 keep_frames = 8",
        "int64 time_nanos = 9",
        "int64 duration_nanos = 10",
        "ValueType period_type = 11",
        "int64 period = 12",
        "repeated int64 comment = 13",
        "int64 default_sample_type = 14",
        "int64 doc_url = 15",
    ),
    "ValueType": ("int64 type = 1", "int64 unit = 2"),
    "Sample": (
        "repeated uint64 location_id = 1",
        "repeated int64 value = 2",
        "repeated Label label = 3",
    ),
    "Label": ("int64 key = 1", "int64 str = 2", "int64 num = 3", "int64 num_unit = 4"),
    "Mapping": (
        "uint64 id = 1",
        "uint64 memory_start = 2",
        "uint64 memory_limit = 3",
        "uint64 file_offset = 4",
        "int64 filename = 5",
        "int64 build_id = 6",
        "bool has_functions = 7",
        "bool has_filenames = 8",
        "bool has_line_numbers = 9",
        "bool has_inline_frames = 10",
    ),
    "Location": (
        "uint64 id = 1",
        "uint64 mapping_id = 2",
        "uint64 address = 3",
        "repeated Line line = 4",
        "bool is_folded = 5",
    ),
    "Line": ("uint64 function_id = 1", "int64 line = 2", "int64 column = 3"),
    "Function": (
        "uint64 id = 1",
        "int64 name = 2",
        "int64 system_name = 3",
        "int64 filename = 4",
        "int64 start_line = 5",
    ),
}

# type[Any]: the classes are made at run time, so attribute access cannot be checked statically.
_CLASSES = build_schema("perftools.profiles", "hostflame/perftools/profile.proto", PROFILE_FIELDS)

Profile: type[Any] = _CLASSES["Profile"]
ValueType: type[Any] = _CLASSES["ValueType"]
Sample: type[Any] = _CLASSES["Sample"]
Label: type[Any] = _CLASSES["Label"]
Mapping: type[Any] = _CLASSES["Mapping"]
Location: type[Any] = _CLASSES["Location"]
Line: type[Any] = _CLASSES["Line"]
Function: type[Any] = _CLASSES["Function"]
