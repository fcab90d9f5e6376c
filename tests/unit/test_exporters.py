"""File, disk and HTML exporters: format by extension, atomic writes, a self-contained page."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from agent.errors import HostflameError, UsageError
from agent.exporters import Exporter
from agent.exporters.disk import DiskExporter
from agent.exporters.files import FilesExporter, OutputFormat, check_outputs, format_for, write_outputs
from agent.exporters.html import render_html, stacks_of
from agent.model import FrameKind, Profile
from agent.view.flame import view_data
from tests.pprof_cli import run_pprof, traces
from tests.profile_factory import APP, KERNEL, LIBC, START_NS, make_profile, sample, sym

HERE = Path(__file__).resolve().parent
MAIN = sym(APP.start + 0x10, APP, "main", file="/src/main.c", line=10)
WORK = sym(APP.start + 0x20, APP, "hash_inl", "work", file="/src/work.c", line=20)
MEMCPY = sym(LIBC.start + 0x30, LIBC, "memcpy")
SYSCALL = sym(KERNEL.start + 0x40, KERNEL, "do_syscall_64", kind=FrameKind.KERNEL)


def profile(host: str = "node-1"):  # type: ignore[no-untyped-def]
    return make_profile(sample(MEMCPY, WORK, MAIN, count=3), sample(SYSCALL, MEMCPY, MAIN, count=2, comm="other"),
                        host=host, counters={"lost_counts_map_full": 1})


# --- formats by extension -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [
    ("out/cpu.pb.gz", OutputFormat.PPROF), ("x.folded", OutputFormat.FOLDED),
    ("flame.html", OutputFormat.HTML), ("FLAME.HTML", OutputFormat.HTML),
])
def test_format_follows_the_extension(name: str, fmt: OutputFormat) -> None:
    assert format_for(name) is fmt


@pytest.mark.parametrize("name", ["x.txt", "cpu.pb", "cpu.gz", "folded", "x.svg"])
def test_unknown_extension_is_a_usage_error(name: str) -> None:
    with pytest.raises(UsageError) as raised:
        format_for(name)
    assert str(raised.value) == f"unknown output format for {name}: use .pb.gz, .folded, .html or .speedscope.json"
    assert raised.value.exit_code == 2


def test_one_bad_extension_writes_nothing_at_all(tmp_path: Path) -> None:
    # GIVEN a good and a bad output path WHEN writing THEN UsageError and the directory stays empty
    with pytest.raises(UsageError):
        write_outputs(profile(), [tmp_path / "ok.pb.gz", tmp_path / "bad.txt"])
    assert list(tmp_path.iterdir()) == []


def test_check_outputs_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        check_outputs([tmp_path / "nope" / "cpu.pb.gz"])


def test_every_format_is_written_and_readable(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN one profile and three outputs
    paths = [tmp_path / "cpu.pb.gz", tmp_path / "cpu.folded", tmp_path / "cpu.html"]
    # WHEN written
    assert write_outputs(profile(), paths) == paths
    # THEN pprof reads the stacks back, the folded file has the expected lines, the page is HTML
    assert traces(pprof_tool, paths[0]) == sorted([
        (("do_syscall_64", "memcpy", "main"), 2, (("comm", "other"), ("pid", "42"))),
        (("memcpy", "hash_inl (inline)", "work", "main"), 3, (("comm", "server"), ("pid", "42"))),
    ])
    assert paths[1].read_text() == ("other;main;memcpy;do_syscall_64_[k] 2\n"
                                    "server;main;work;hash_inl_[i];memcpy 3\n")
    assert paths[2].read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.folded", "cpu.html", "cpu.pb.gz"]  # no temporaries
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an existing output and a replace that fails (as on a full or read-only disk)
    target = tmp_path / "cpu.folded"
    target.write_text("old\n")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    # WHEN writing THEN a one-line error naming the file, the old content, and no temporary file
    with pytest.raises(HostflameError, match=r"cannot write .*cpu.folded: No space left on device$") as raised:
        write_outputs(profile(), [target])
    assert isinstance(raised.value, OSError) and raised.value.errno == 28  # the daemon catches OSError
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cpu.folded"]


def test_files_exporter_rewrites_its_paths(tmp_path: Path) -> None:
    exporter: Exporter = FilesExporter([tmp_path / "a.folded"])
    exporter.export(profile())
    exporter.export(make_profile(sample(MAIN, count=9)))
    exporter.close()
    assert (tmp_path / "a.folded").read_text() == "server;main 9\n"


# --- disk exporter --------------------------------------------------------------------------

def test_disk_exporter_names_files_by_utc_start_and_host(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN profiles starting at 2023-11-14T22:13:20.123Z (START_NS), one from a host with a '/'
    exporter: Exporter = DiskExporter(tmp_path / "profiles")
    # WHEN three are exported, two in the same second from the same host
    exporter.export(profile())
    exporter.export(profile())
    exporter.export(profile(host="odd/host name"))
    exporter.close()
    # THEN each has its own file, named from the UTC time and a path-safe host, and pprof reads it
    names = sorted(p.name for p in (tmp_path / "profiles").iterdir())
    assert names == [
        "hostflame-20231114T221320Z-node-1-1.pb.gz",
        "hostflame-20231114T221320Z-node-1.pb.gz",
        "hostflame-20231114T221320Z-odd_host_name.pb.gz",
    ]
    for name in names:
        assert "Time: 2023-11-14 22:13:20.123 +0000 UTC" in run_pprof(
            pprof_tool, "-raw", "-symbolize=none", tmp_path / "profiles" / name)
    assert START_NS // 10**9 == 1_700_000_000


def test_disk_exporter_keeps_at_most_max_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not ours\n")
    exporter = DiskExporter(tmp_path, max_files=2)
    written = [exporter.write(profile()) for _ in range(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([written[2].name, written[3].name, "notes.txt"])


def test_disk_exporter_rejects_a_zero_limit(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        DiskExporter(tmp_path, max_files=0)


# --- html flame graph -------------------------------------------------------------------------

def embedded_data(page: str) -> dict[str, object]:
    match = re.search(r'<script id="hostflame-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "no embedded data"
    data: dict[str, object] = json.loads(match.group(1))
    return data


def test_html_is_self_contained() -> None:
    page = render_html(profile())
    # THEN nothing is loaded from elsewhere: no URLs, no src/href attributes, no CSS imports
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    assert not re.search(r"\b(src|href)\s*=|@import|url\(", page, re.I)
    assert page.count("<script") == 2  # the data and the inline script


def test_html_embeds_the_profile_data() -> None:
    data = embedded_data(render_html(profile()))
    meta = data["meta"]
    assert isinstance(meta, dict)
    assert meta["host"] == "node-1" and meta["total"] == 5 and meta["frequency_hz"] == round(1e9 / (10**9 // 99), 3)
    assert meta["start"] == "2023-11-14T22:13:20Z" and meta["counters"] == {"lost_counts_map_full": 1}
    assert meta["lost"] == 1 and meta["unit"] == "count" and meta["sample_type"] == "samples"
    strings = data["strings"]
    assert isinstance(strings, list)
    assert {"memcpy", "hash_inl", "work", "main", "do_syscall_64", "server", "other"} <= set(strings)
    tree = data["tree"]
    assert isinstance(tree, dict)
    assert [tree[column][0] for column in ("frame", "line", "up")] == [-1, 0, 1]  # the root: parent -1
    samples = data["samples"]
    assert isinstance(samples, dict) and sum(samples["value"]) == 5


def test_html_data_cannot_close_its_script_tag() -> None:
    # GIVEN a function name that is HTML WHEN rendered THEN it stays data, intact after parsing
    evil = "</script><script>alert(1)</script><!--"
    page = render_html(make_profile(sample(sym(0x10, APP, evil), count=1)))
    assert page.count("</script>") == 2
    strings = embedded_data(page)["strings"]
    assert isinstance(strings, list) and evil in strings


def flame_data(profile: Profile) -> dict[str, object]:
    return view_data(stacks_of(profile))


def nested(data: dict[str, object]) -> tuple[object, ...]:
    """The columnar tree as nested (name, line, samples, children) tuples, siblings by name;
    a node's samples are the values of the samples ending at it or below (summed here)."""
    tree, frames, strings, samples = data["tree"], data["frames"], data["strings"], data["samples"]
    assert isinstance(tree, dict) and isinstance(frames, list) and isinstance(strings, list)
    assert isinstance(samples, dict)
    names = ["all"] + [strings[row[0]] for row in frames]  # frame -1 (the root) -> names[0]
    children: dict[int, list[int]] = {}
    parents = [index - up for index, up in enumerate(tree["up"])]
    for index, parent in enumerate(parents):
        children.setdefault(parent, []).append(index)
    totals = [0] * len(parents)
    for leaf, value in zip(samples["node"], samples["value"], strict=True):
        at = leaf
        while at >= 0:
            totals[at] += value
            at = parents[at]

    def node(index: int) -> tuple[object, ...]:
        kids = sorted(children.get(index, []), key=lambda i: names[tree["frame"][i] + 1])
        return (names[tree["frame"][index] + 1], tree["line"][index], totals[index],
                tuple(node(k) for k in kids))

    assert children[-1] == [0]  # one root, first
    return node(0)


def test_flame_tree_merges_by_function_and_keeps_a_shared_line_only() -> None:
    # GIVEN main calling memcpy from two lines of main.c, and work (line 21) calling memcpy
    main_l10 = sym(APP.start + 0x10, APP, "main", file="/src/main.c", line=10)
    main_l12 = sym(APP.start + 0x18, APP, "main", file="/src/main.c", line=12)
    data = flame_data(make_profile(sample(MEMCPY, main_l10, count=1), sample(MEMCPY, main_l12, count=2),
                                   sample(MEMCPY, WORK, main_l10, count=4)))
    # THEN one main node (its samples from two lines: line 0), children sorted by name
    assert nested(data) == ("all", 0, 7, (
        ("server", 0, 7, (
            ("main", 0, 7, (
                ("memcpy", 0, 3, ()),
                ("work", 21, 4, (("hash_inl", 20, 4, (("memcpy", 0, 4, ()),)),)),
            )),
        )),
    ))
