"""agent/bpf_abi.py and the loader's ctypes struct mirror bpf/profile.h exactly.

The expected values come from the C compiler reading the header, not from our own code.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

from agent import bpf_abi
from agent.bpf_loader import ProcessEventStruct
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


def test_process_event_layout_matches_the_c_compiler(tmp_path: Path) -> None:
    # GIVEN a C program that prints the layout of struct process_event as gcc lays it out
    src = tmp_path / "layout.c"
    src.write_text(
        '#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n'
        f'#include "{HEADER_PATH}"\n'
        "int main(void) { printf(\"%zu %zu %zu %zu %zu\\n\", sizeof(struct process_event),"
        " offsetof(struct process_event, pid), offsetof(struct process_event, incarnation),"
        " offsetof(struct process_event, time_ns), offsetof(struct process_event, comm)); return 0; }\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    size, pid, incarnation, time_ns, comm = map(int, subprocess.run([str(exe)], capture_output=True, text=True,
                                                                     check=True).stdout.split())
    # THEN the ctypes mirror the loader reads events with has the same layout
    assert ctypes.sizeof(ProcessEventStruct) == size
    assert ProcessEventStruct.pid.offset == pid
    assert ProcessEventStruct.incarnation.offset == incarnation
    assert ProcessEventStruct.time_ns.offset == time_ns
    assert ProcessEventStruct.comm.offset == comm
