"""`hostflame view` and `hostflame diff` without a browser: reading pprof (also Go's), the
viewer data, speedscope JSON against speedscope's published schema, folded stacks against
Google pprof's reading of the same file, and one-line errors with no file left behind."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from agent.cli import main
from agent.model import FrameKind
from agent.pprof import build_pprof, parse_pprof
from agent.proto import profile as pb
from agent.view.flame import diff_data
from agent.view.stacks import read_stacks
from tests.fixtures.build import build_go
from tests.pprof_cli import traces
from tests.profile_factory import APP, KERNEL, LIBC, make_profile, sample, sym

MAIN = sym(APP.start + 0x10, APP, "main", file="/src/main.c", line=10)
WORK = sym(APP.start + 0x20, APP, "hash_inl", "work", file="/src/work.c", line=20)
MEMCPY = sym(LIBC.start + 0x30, LIBC, "memcpy")
SYSCALL = sym(KERNEL.start + 0x40, KERNEL, "do_syscall_64", kind=FrameKind.KERNEL)
JITTED = sym(0x3000, None, "[jit] 0x3000", kind=FrameKind.JIT, named=False)


def hostflame_pprof(tmp_path: Path) -> Path:
    profile = make_profile(sample(MEMCPY, WORK, MAIN, count=3), sample(SYSCALL, MEMCPY, MAIN, count=2, comm="other"),
                           sample(JITTED, MAIN, count=1, comm="java", pid=9), counters={"lost_counts_map_full": 1})
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(build_pprof(profile))
    return path


@pytest.fixture(scope="module")
def go_pprof(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CPU profile Go's runtime/pprof wrote of a program spinning in main.goBurn."""
    out = tmp_path_factory.mktemp("go")
    exe = build_go("cpuprof", out)
    path = out / "go.pb.gz"
    subprocess.run([str(exe), str(path), "0.5"], check=True, timeout=60)
    return path


def pprof_folded(pprof_tool: Path, path: Path) -> dict[str, int]:
    """Folded stacks as Google pprof reads the file: comm first, root first, inlined marked _[i]."""
    folded: dict[str, int] = {}
    for frames, count, labels in traces(pprof_tool, path):
        comm = [v for k, v in labels if k == "comm"]
        names = [f[: -len(" (inline)")] + "_[i]" if f.endswith(" (inline)") else f for f in reversed(frames)]
        key = ";".join(comm + names)
        folded[key] = folded.get(key, 0) + count
    return folded


def read_folded(path: Path) -> dict[str, int]:
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in path.read_text().splitlines()}


def strip_kind_suffixes(folded: dict[str, int]) -> dict[str, int]:
    """Kernel and JIT suffixes are ours, not pprof's: drop them to compare."""
    return {k.replace("_[k]", "").replace("_[j]", ""): v for k, v in folded.items()}


# --- reading pprof --------------------------------------------------------------------------

def test_hostflame_pprof_reads_back_with_kinds_labels_and_facts(tmp_path: Path) -> None:
    stacks = read_stacks(parse_pprof(hostflame_pprof(tmp_path).read_bytes()))
    kinds = {row.name: row.kind for row in stacks.frames}
    assert kinds == {"server": "process", "other": "process", "java": "process", "main": "native", "work": "native",
                     "hash_inl": "inlined", "memcpy": "native", "do_syscall_64": "kernel", "[jit] 0x3000": "jit"}
    first = stacks.samples[0]
    assert [stacks.frames[f].name for f in first.frames] == ["server", "main", "work", "hash_inl", "memcpy"]
    assert first.lines == (0, 10, 21, 20, 0) and first.value == 3
    assert dict(first.labels) == {"comm": "server", "pid": "42", "process": "server [42]"}
    assert stacks.host == "node-1" and stacks.counters == {"lost_counts_map_full": 1}
    assert (stacks.sample_type, stacks.unit, stacks.total) == ("samples", "count", 6)


def test_go_cpu_profile_reads_like_google_pprof_reads_it(go_pprof: Path, tmp_path: Path, pprof_tool: Path) -> None:
    # WHEN Go's own profile is viewed as folded stacks
    assert main(["view", str(go_pprof), "-o", str(tmp_path / "go.folded"), "-o", str(tmp_path / "go.html")]) == 0
    ours = read_folded(tmp_path / "go.folded")
    # THEN the stacks and counts are those Google pprof reads, and goBurn is under main.main
    assert ours == pprof_folded(pprof_tool, go_pprof)
    assert any(stack.endswith("main.main;main.goBurn") for stack in ours)
    assert "main.goBurn" in (tmp_path / "go.html").read_text()


def test_without_a_samples_type_the_default_type_is_shown() -> None:
    # GIVEN a heap-like profile: two sample types, the default the second one
    message = pb.Profile(string_table=["", "alloc_objects", "count", "alloc_space", "bytes", "f"])
    message.sample_type.add(type=1, unit=2)
    message.sample_type.add(type=3, unit=4)
    message.default_sample_type = 3
    message.function.add(id=1, name=5)
    message.location.add(id=1, address=0x10, line=[pb.Line(function_id=1)])
    message.sample.add(location_id=[1], value=[2, 4096])
    stacks = read_stacks(message)
    assert (stacks.sample_type, stacks.unit, stacks.total) == ("alloc_space", "bytes", 4096)
    assert [row.kind for row in stacks.frames] == ["unknown"]


def test_diff_data_puts_both_profiles_on_one_tree(tmp_path: Path) -> None:
    base = read_stacks(parse_pprof(build_pprof(make_profile(sample(MEMCPY, MAIN, count=4)))))
    new = read_stacks(parse_pprof(build_pprof(make_profile(sample(WORK, MAIN, count=1)))))
    data = diff_data(base, new, ("a.pb.gz", "b.pb.gz"))
    tree, strings, frames = data["tree"], data["strings"], data["frames"]
    assert isinstance(tree, dict) and isinstance(strings, list) and isinstance(frames, list)
    names = [strings[frames[f][0]] if f >= 0 else "all" for f in tree["frame"]]
    assert names == ["all", "server", "main", "memcpy", "work", "hash_inl"]  # main is shared
    assert data["base_samples"] == {"node": [3], "value": [4], "labels": [0]}
    assert data["samples"] == {"node": [5], "value": [1], "labels": [0]}


def test_diff_lines_up_two_installs_of_one_program() -> None:
    # GIVEN the same program at two paths (a new version installed elsewhere)
    moved = replace(APP, path="/opt/app-v2/bin/server")
    main_v2 = sym(moved.start + 0x10, moved, "main", file="/src/main.c", line=10)
    base = read_stacks(parse_pprof(build_pprof(make_profile(sample(MAIN, count=4)))))
    new = read_stacks(parse_pprof(build_pprof(make_profile(sample(main_v2, count=1)))))
    # WHEN diffed THEN main is one node with samples on both sides
    data = diff_data(base, new)
    tree = data["tree"]
    assert isinstance(tree, dict) and tree["up"] == [1, 1, 1]  # all, server (the process), main
    assert data["base_samples"] == {"node": [2], "value": [4], "labels": [0]}
    assert data["samples"] == {"node": [2], "value": [1], "labels": [0]}


# --- speedscope and folded ------------------------------------------------------------------

def test_speedscope_output_follows_the_published_schema(tmp_path: Path, pprof_tool: Path,
                                                        speedscope_schema: dict[str, object]) -> None:
    source = hostflame_pprof(tmp_path)
    out = tmp_path / "cpu.speedscope.json"
    assert main(["view", str(source), "-o", str(out)]) == 0
    document = json.loads(out.read_text())
    jsonschema.validate(document, speedscope_schema)
    # one profile per process; its weights add up to what Google pprof counts for that comm
    by_comm: dict[str, int] = {}
    for _, count, labels in traces(pprof_tool, source):
        comm = dict(labels)["comm"]
        by_comm[comm] = by_comm.get(comm, 0) + count
    assert {p["name"]: sum(p["weights"]) for p in document["profiles"]} == by_comm
    frames = document["shared"]["frames"]
    server = next(p for p in document["profiles"] if p["name"] == "server")
    assert [frames[i]["name"] for i in server["samples"][0]] == ["main", "work", "hash_inl", "memcpy"]
    assert {"name": "work", "file": "/src/work.c", "line": 21} in frames


def test_speedscope_of_go_and_of_record_follow_the_schema(go_pprof: Path, tmp_path: Path,
                                                          speedscope_schema: dict[str, object]) -> None:
    assert main(["view", str(go_pprof), "-o", str(tmp_path / "go.speedscope.json")]) == 0
    jsonschema.validate(json.loads((tmp_path / "go.speedscope.json").read_text()), speedscope_schema)
    from agent.exporters.files import write_outputs

    write_outputs(make_profile(sample(SYSCALL, MEMCPY, MAIN, count=2)), [tmp_path / "rec.speedscope.json"])
    document = json.loads((tmp_path / "rec.speedscope.json").read_text())
    jsonschema.validate(document, speedscope_schema)
    assert document["profiles"][0]["unit"] == "none" and document["profiles"][0]["weights"] == [2]
    write_outputs(make_profile(), [tmp_path / "empty.speedscope.json"])  # no samples: one empty profile
    document = json.loads((tmp_path / "empty.speedscope.json").read_text())
    jsonschema.validate(document, speedscope_schema)
    assert [p["samples"] for p in document["profiles"]] == [[]]


def test_view_folded_matches_google_pprof_and_record_folded(tmp_path: Path, pprof_tool: Path) -> None:
    source = hostflame_pprof(tmp_path)
    assert main(["view", str(source), "-o", str(tmp_path / "v.folded")]) == 0
    ours = read_folded(tmp_path / "v.folded")
    assert strip_kind_suffixes(ours) == pprof_folded(pprof_tool, source)
    assert "other;main;memcpy;do_syscall_64_[k]" in ours and "java;main;[jit] 0x3000_[j]" in ours


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["view", "{missing}", "-o", "{out}/f.html"], "cannot read {missing}: No such file or directory"),
    (["view", "{text}", "-o", "{out}/f.html"], "{text} is not a pprof profile"),
    (["view", "{empty}", "-o", "{out}/f.html"], "{empty} is not a pprof profile"),
    (["view", "{good}", "-o", "{out}/f.html", "-o", "{out}/f.txt"], "unknown output format for {out}/f.txt: use .html"),
    (["view", "{good}", "-o", "{out}/f.pb.gz"], "unknown output format for {out}/f.pb.gz"),
    (["view", "{good}", "-o", "{out}/nodir/f.html"], "directory {out}/nodir does not exist"),
    (["diff", "{good}", "{missing}", "-o", "{out}/d.html"], "cannot read {missing}"),
    (["diff", "{good}", "{good}", "-o", "{out}/d.folded"], "unknown output format for {out}/d.folded: use .html"),
    (["view", "{good}"], "the following arguments are required: -o/--output"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  args: list[str], message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = {"missing": tmp_path / "missing.pb.gz", "text": tmp_path / "stacks.folded", "empty": tmp_path / "empty",
             "good": hostflame_pprof(tmp_path), "out": out}
    names["text"].write_text("main;work 3\n")
    names["empty"].write_bytes(b"")
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hostflame: error: ") and message.format(**names) in err
    assert list(out.iterdir()) == []


def test_diff_cli_writes_a_page(tmp_path: Path) -> None:
    base = hostflame_pprof(tmp_path)
    assert main(["diff", str(base), str(base), "-o", str(tmp_path / "d.html")]) == 0
    page = (tmp_path / "d.html").read_text()
    assert '"base_samples"' in page and "hostflame diff: cpu.pb.gz -&gt; cpu.pb.gz" in page
