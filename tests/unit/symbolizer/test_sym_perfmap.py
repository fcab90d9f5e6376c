"""JIT frames from perf maps: parsing, the namespace pid, and a real Node --perf-basic-prof.

The expected names come from the map file the JIT itself wrote (an independent source), and
the mapping that holds each address from the process's own /proc/PID/maps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sym_helpers import mapping_of, read_maps

from symbolizer import FrameKind, Symbolizer
from symbolizer.model import Mapping
from symbolizer.perfmap import PerfMaps, namespace_pid, parse_perf_map

NODE_LOOP = "function hot(n){let s=0;for(let i=0;i<n;i++){s+=Math.sqrt(i)}return s};" \
            "console.log('ready');setInterval(()=>hot(1e5),1)"


def test_parse_perf_map_skips_garbage_and_later_lines_win() -> None:
    # GIVEN a map with hex with and without 0x, a bad line, and a start written twice
    data = b"0x1000 10 LazyCompile:*a a.js:1\n2000 0x20 b\nnot a line\n1000 8 a2\n3000 0 empty\n"
    # WHEN parsed
    perf_map = parse_perf_map(data)
    # THEN the later entry at 0x1000 wins, sizes bound lookups, zero sizes are dropped
    assert perf_map.lookup(0x1004) == "a2"
    assert perf_map.lookup(0x1009) is None
    assert perf_map.lookup(0x201F) == "b"
    assert perf_map.lookup(0x3000) is None


def test_namespace_pid_is_the_innermost() -> None:
    assert namespace_pid(b"Name:\tx\nNSpid:\t4242\t7\n") == 7
    assert namespace_pid(b"Name:\tx\n") is None


def test_map_read_through_the_process_root_under_its_namespace_pid(tmp_path: Path) -> None:
    # GIVEN a fake proc root where host pid 4242 is pid 7 in its namespace, with its own /tmp
    proc = tmp_path / "proc"
    (proc / "4242" / "root" / "tmp").mkdir(parents=True)
    (proc / "4242" / "status").write_text("Name:\tnode\nNSpid:\t4242\t7\n")
    (proc / "4242" / "root" / "tmp" / "perf-7.map").write_text("7f0000001000 100 JS:*work app.js:3\n")
    (tmp_path / "perf-4242.map").write_text("7f0000001000 100 wrong\n")
    # WHEN an address in it is looked up
    name = PerfMaps(str(proc)).lookup(4242, 0x7F0000001010)
    # THEN the process's own map under its namespace pid names it
    assert name == "JS:*work app.js:3"


def test_symlinked_map_cannot_escape_the_process_root(tmp_path: Path) -> None:
    # GIVEN a container whose perf map is a symlink to an absolute path
    proc = tmp_path / "proc"
    (proc / "9" / "root" / "tmp").mkdir(parents=True)
    (proc / "9" / "status").write_text("NSpid:\t9\t1\n")
    outside = tmp_path / "secret.map"
    outside.write_text("1000 100 outside\n")
    os.symlink(str(outside), proc / "9" / "root" / "tmp" / "perf-1.map")
    # WHEN looked up, THEN the symlink resolves inside the root (where nothing exists)
    assert PerfMaps(str(proc)).lookup(9, 0x1010) is None


def _perf_map_entries(path: Path) -> list[tuple[int, int, str]]:
    out = []
    text = path.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():  # Node may be mid-way through the last line
        start, size, name = line.split(" ", 2)
        out.append((int(start, 16), int(size, 16), name))
    return out


def test_node_perf_basic_prof_frames_are_named(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.fail("node not found: install nodejs")
    # GIVEN a Node process writing /tmp/perf-PID.map (and its isolate-*-v8.log into tmp_path,
    # not the working directory)
    process = subprocess.Popen(["node", "--perf-basic-prof", "-e", NODE_LOOP], stdout=subprocess.PIPE,
                               cwd=tmp_path)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        map_path = Path(f"/tmp/perf-{process.pid}.map")
        deadline = time.monotonic() + 10
        while not (map_path.exists() and "hot" in map_path.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        entries = _perf_map_entries(map_path)
        maps = read_maps(process.pid)
        anon = [e for e in entries if not mapping_of(maps, e[0]).is_file][-50:]
        assert anon, "no JIT entry in anonymous memory"
        # WHEN the symbolizer names addresses inside those entries
        symbolizer = Symbolizer()
        got = symbolizer.symbolize_user(process.pid, maps, [start + size // 2 for start, size, _ in anon])
    finally:
        process.kill()
        process.wait(timeout=10)
        Path(f"/tmp/perf-{process.pid}.map").unlink(missing_ok=True)
    # THEN each gets the name Node wrote for it (the last entry for its start), kind JIT
    expected = {start: name for start, _, name in entries}
    for (start, _, _), sym in zip(anon, got, strict=True):
        assert sym.kind is FrameKind.JIT and sym.named
        assert sym.frames[0].function == expected[start]


def test_unmapped_jit_without_map_stays_unnamed(tmp_path: Path) -> None:
    # GIVEN a process (this one) with no perf map and an anonymous mapping
    mapping = Mapping(0x10000, 0x20000, "r-xp", 0, 0, 0, 0, "")
    symbolizer = Symbolizer(proc_root=str(tmp_path))
    # WHEN an address in it is named, THEN it is an unnamed [jit] frame
    got = symbolizer.symbolize_user(os.getpid(), [mapping], [0x10010])
    assert got[0].kind is FrameKind.JIT and not got[0].named


def test_an_unterminated_last_line_is_not_read() -> None:
    # GIVEN a perf map whose writer is mid-way through its last line
    data = b"1000 10 JS:~whole node:internal/a.js:1:1\n2000 10 JS:~cut node:inter"
    # WHEN parsed THEN only the complete line counts: a name cut short is never shown
    parsed = parse_perf_map(data)
    assert parsed.lookup(0x1005) == "JS:~whole node:internal/a.js:1:1"
    assert parsed.lookup(0x2005) is None
