"""Disk exporter: one file per target per interval, retention by age and by total size."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.exporters import disk
from agent.exporters.disk import DiskExporter
from agent.labels import Targeter
from agent.model import TargetProfile
from tests.profile_factory import APP, make_profile, sample, sym

MAIN = sym(APP.start + 0x10, APP, "main")


def target(service: str, start_s: int = 1_700_000_000) -> TargetProfile:
    profile = make_profile(sample(MAIN, count=5, comm=service))
    (t,) = Targeter().split(replace(profile, start_ns=start_s * 1_000_000_000)).targets
    return t


def test_files_are_named_after_the_target(tmp_path: Path) -> None:
    exporter = DiskExporter(tmp_path)
    exporter.export(target("api"))
    exporter.export(target("db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hostflame-20231114T221320Z-node-1-api.pb.gz", "hostflame-20231114T221320Z-node-1-db.pb.gz"]


def test_targets_sharing_a_name_get_suffixes_without_rechecking_every_earlier_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a file of that name left by an earlier run, and the existence checks counted
    (tmp_path / "hostflame-20231114T221320Z-node-1-worker.pb.gz").write_bytes(b"earlier")
    checks: list[str] = []
    real_exists = Path.exists

    def exists(self: Path, *args: bool) -> bool:
        checks.append(self.name)
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    # WHEN 50 targets of one interval share the service name "worker"
    exporter = DiskExporter(tmp_path)
    for _ in range(50):
        exporter.export(target("worker"))
    # THEN none is overwritten: the earlier file stays, the new ones take -1 ... -50
    names = {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "hostflame-20231114T221320Z-node-1-worker.pb.gz").read_bytes() == b"earlier"
    assert names == {"hostflame-20231114T221320Z-node-1-worker.pb.gz"} | {
        f"hostflame-20231114T221320Z-node-1-worker-{n}.pb.gz" for n in range(1, 51)}
    # AND the names were checked 51 times in all (once per file, plus the one taken), not 1 + 2 + ... + 51
    assert len(checks) == 51


def test_files_older_than_max_age_are_removed(tmp_path: Path) -> None:
    # GIVEN two of our files aged 2 h and 10 min and a file that is not ours, aged 2 h
    exporter = DiskExporter(tmp_path, max_age_s=3600)
    old = exporter.write(target("a").profile, "old")
    recent = exporter.write(replace(target("a").profile, start_ns=1_700_000_100 * 10**9), "recent")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("keep me")
    now = time.time()
    os.utime(old, (now - 7200, now - 7200))
    os.utime(recent, (now - 600, now - 600))
    os.utime(foreign, (now - 7200, now - 7200))
    # WHEN another profile is written
    new = exporter.write(replace(target("a").profile, start_ns=1_700_000_200 * 10**9), "new")
    # THEN only our file past the age limit is gone
    assert sorted(tmp_path.iterdir()) == sorted([recent, new, foreign])


def test_oldest_files_go_when_the_total_size_is_over_the_limit(tmp_path: Path) -> None:
    one = DiskExporter(tmp_path).write(target("x").profile, "probe")
    size = one.stat().st_size
    one.unlink()
    exporter = DiskExporter(tmp_path, max_total_bytes=3 * size)
    paths = []
    for i in range(6):
        path = exporter.write(replace(target("x").profile, start_ns=(1_700_000_000 + i) * 10**9), "svc")
        os.utime(path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # strictly increasing ages
        paths.append(path)
    assert sorted(tmp_path.iterdir()) == paths[3:]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 3 * size


def test_an_interval_is_written_with_one_flush_and_leaves_no_temporaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the filesystem flushes counted (the real syncfs still runs)
    flushes: list[Path] = []
    real_sync = disk._sync_filesystem
    monkeypatch.setattr(disk, "_sync_filesystem", lambda d: (flushes.append(d), real_sync(d)))
    # WHEN one interval's three targets are exported
    written, failed = DiskExporter(tmp_path).export_all([target("api"), target("db"), target("web")])
    # THEN three files, one flush before they got their names, no hidden temporary left
    assert not failed and len(written) == 3
    assert flushes == [tmp_path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in written)


def test_a_target_that_cannot_be_written_does_not_stop_the_others(tmp_path: Path) -> None:
    # GIVEN a directory squatting on the temporary name of the "db" target's file
    squat = tmp_path / ".hostflame-20231114T221320Z-node-1-db.pb.gz.tmp"
    squat.mkdir()
    # WHEN the interval is exported
    written, failed = DiskExporter(tmp_path).export_all([target("api"), target("db"), target("web")])
    # THEN "api" and "web" are written, and the error names the file "db" would have been
    assert [p.name for p in written] == ["hostflame-20231114T221320Z-node-1-api.pb.gz",
                                         "hostflame-20231114T221320Z-node-1-web.pb.gz"]
    assert len(failed) == 1 and "hostflame-20231114T221320Z-node-1-db.pb.gz" in str(failed[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([squat.name, *(p.name for p in written)])


def test_a_temporary_left_by_a_crash_is_replaced_and_a_symlink_not_followed(tmp_path: Path) -> None:
    # GIVEN the temporary name of the next file is a symlink to a file outside the directory
    outside = tmp_path.parent / f"{tmp_path.name}-victim"
    outside.write_bytes(b"precious")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / ".hostflame-20231114T221320Z-node-1-api.pb.gz.tmp").symlink_to(outside)
    # WHEN the profile is written
    path = DiskExporter(exports).write(target("api").profile, "api")
    # THEN the file is a real pprof, the symlink is gone, and the file it pointed to untouched
    assert path.read_bytes()[:2] == b"\x1f\x8b" and not path.is_symlink()
    assert [p.name for p in exports.iterdir()] == [path.name]
    assert outside.read_bytes() == b"precious"


def test_temporaries_left_by_a_crashed_run_are_removed_at_start(tmp_path: Path) -> None:
    # GIVEN a crashed run's temporary (written, never renamed), one of ours and someone else's file
    stale = tmp_path / ".hostflame-20231114T221320Z-node-1-api.pb.gz.tmp"
    stale.write_bytes(b"\x1f\x8b half")
    finished = tmp_path / "hostflame-20231114T221320Z-node-1-db.pb.gz"
    finished.write_bytes(b"done")
    other = tmp_path / ".editor.tmp"
    other.write_text("not ours")
    # WHEN an exporter starts on the directory
    DiskExporter(tmp_path)
    # THEN only the temporary is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([finished.name, other.name])
