"""agent/bpf_abi.py (constants and struct formats) mirrors bpf/profile.h exactly.

The expected values come from the C compiler reading the header, not from our own code.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from agent import bpf_abi
from bpf import HEADER_PATH


def header_macros() -> dict[str, int]:
    """The header's own macros: gcc's predefined ones (-undef drops them) are not ours."""
    out = subprocess.run(["gcc", "-undef", "-E", "-dM", str(HEADER_PATH)], capture_output=True, text=True,
                         check=True).stdout
    macros = {}
    for line in out.splitlines():
        m = re.fullmatch(r"#define (\w+) (\d+)", line.strip())
        if m:
            macros[m.group(1)] = int(m.group(2))
    return macros


def test_every_numeric_macro_of_the_header_is_mirrored() -> None:
    macros = {k: v for k, v in header_macros().items() if not k.startswith("_") and k != "HOSTFLAME_PROFILE_H"}
    assert macros, "gcc found no macros in the header"
    mirrored = {k: getattr(bpf_abi, k, None) for k in macros}
    assert mirrored == macros


def test_counter_names_cover_every_counter() -> None:
    assert len(bpf_abi.COUNTER_NAMES) == bpf_abi.COUNTER_SIZE


def c_layout(tmp_path: Path, struct_name: str, fields: list[str]) -> list[int]:
    """sizeof and each field's offset of one struct of the header, as gcc lays it out."""
    src = tmp_path / f"{struct_name}.c"
    offsets = "".join(f', offsetof(struct {struct_name}, {f})' for f in fields)
    src.write_text(
        '#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n'
        f'#include "{HEADER_PATH}"\n'
        f'int main(void) {{ printf("%zu{" %zu" * len(fields)}\\n", sizeof(struct {struct_name}){offsets});'
        " return 0; }\n"
    )
    exe = tmp_path / struct_name
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    return list(map(int, subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()))


def test_struct_formats_match_the_c_compiler(tmp_path: Path) -> None:
    # GIVEN the layouts gcc gives the header's structs
    key = c_layout(tmp_path, "sample_key", ["pid", "tid", "incarnation", "user_stack_id", "kernel_stack_id", "comm"])
    event = c_layout(tmp_path, "process_event", ["kind", "pid", "incarnation", "time_ns", "comm"])
    # THEN the struct formats the agent decodes map entries and events with agree
    assert [bpf_abi.SAMPLE_KEY_SIZE, *bpf_abi.field_offsets(bpf_abi.SAMPLE_KEY_FORMAT)] == key
    assert [bpf_abi.PROCESS_EVENT_SIZE, *bpf_abi.field_offsets(bpf_abi.PROCESS_EVENT_FORMAT)] == event
