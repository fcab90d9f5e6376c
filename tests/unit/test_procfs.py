"""procfs parsers against canned /proc files and a table of real-world cgroup paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import procfs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"
PODMAN_ID = "3f2a6c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f"
ID = "a" * 64


def test_maps_are_parsed_line_by_line_and_garbage_is_skipped() -> None:
    # GIVEN a canned maps file with file, anonymous, deleted, vdso and garbage lines
    maps = procfs.parse_maps((FIXTURES / "4242" / "maps").read_text())
    # THEN every well-formed line is a Mapping, the garbage line is not
    assert len(maps) == 9
    text = maps[1]
    assert (text.start, text.end, text.perms, text.file_offset) == (0x55D0C0A02000, 0x55D0C0A05000, "r-xp", 0x2000)
    assert (text.dev_major, text.dev_minor, text.inode, text.path) == (0xFE, 0, 1048601, "/opt/app/bin/server")
    assert text.is_exec and text.is_file
    anon = maps[6]
    assert anon.path == "" and anon.is_exec and not anon.is_file
    assert maps[7].path == "/tmp/old build (deleted)"
    assert maps[8].path == "[vdso]" and not maps[8].is_file


def test_start_time_survives_parentheses_and_spaces_in_comm() -> None:
    stat = (FIXTURES / "4242" / "stat").read_text()
    assert procfs.parse_stat_start_time(stat) == 123456
    assert procfs.parse_stat_start_time("garbage") == 0


def test_own_start_time_matches_psutil_style_reading() -> None:
    # GIVEN this very process; WHEN its start time is read THEN it is positive and stable
    root = Path("/proc")
    first = procfs.read_start_time(root, os.getpid())
    assert first > 0 and procfs.read_start_time(root, os.getpid()) == first


def test_cgroup_prefers_the_line_that_names_a_container() -> None:
    text = (FIXTURES / "4242" / "cgroup").read_text()
    path = procfs.parse_cgroup(text)
    assert path == f"/libpod_parent/libpod-{PODMAN_ID}"
    ref = procfs.container_from_cgroup(path)
    assert ref == procfs.ContainerRef("podman", PODMAN_ID)


def test_cgroup_v2_path_is_used_when_no_container() -> None:
    text = "0::/system.slice/nginx.service\n"
    assert procfs.parse_cgroup(text) == "/system.slice/nginx.service"
    assert procfs.parse_cgroup("0::/\n") == "/"


@pytest.mark.parametrize(
    ("path", "runtime"),
    [
        (f"/system.slice/docker-{ID}.scope", "docker"),  # docker, systemd driver, v1 or v2
        (f"/docker/{ID}", "docker"),  # docker, cgroupfs driver
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope",
         "containerd"),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-{ID}.scope", "cri-o"),
        (f"/kubepods.slice/kubepods-podabc.slice/crio-conmon-{ID}.scope", "cri-o"),
        (f"/machine.slice/libpod-{ID}.scope/container", "podman"),
        (f"/libpod_parent/libpod-{ID}", "podman"),
        (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope", "podman"),
        (f"/kubepods/burstable/pod0f1e2d3c-aaaa-bbbb-cccc-000000000000/{ID}", "kubernetes"),
    ],
)
def test_container_ids_from_real_world_cgroup_paths(path: str, runtime: str) -> None:
    assert procfs.container_from_cgroup(path) == procfs.ContainerRef(runtime, ID)


@pytest.mark.parametrize("path", ["/", "/system.slice/sshd.service", "/user.slice/user-0.slice/session-1.scope",
                                  "/docker/short", f"/kubepods/burstable/pod{ID[:8]}"])
def test_no_container_id_where_there_is_none(path: str) -> None:
    assert procfs.container_from_cgroup(path) is None


def test_reading_a_missing_process_gives_nothing_and_raises_nothing(tmp_path: Path) -> None:
    files = procfs.read_process(tmp_path, 99999)
    assert files.maps is None and files.stat is None and files.exe == ""
    assert procfs.read_maps(tmp_path, 99999) is None
    assert procfs.read_start_time(tmp_path, 99999) == 0


def test_read_process_from_fixture_root() -> None:
    files = procfs.read_process(FIXTURES, 4242)
    assert files.comm is not None and files.comm.strip() == "my (odd) prog"
    assert files.cmdline is not None and files.cmdline.split("\0")[:3] == ["/opt/app/bin/server", "--port", "8080"]


UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(("path", "runtime", "pod_uid"), [
    # cgroup v2 (or v1 name=systemd), systemd driver
    (f"/system.slice/docker-{ID}.scope", "docker", ""),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope",
     "containerd", UID),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope", "cri-o", UID),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope", "containerd", UID),  # Guaranteed QoS
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope", "docker",
     UID),  # dockershim / cri-dockerd
    (f"/machine.slice/libpod-{ID}.scope/container", "podman", ""),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container", "podman", ""),
    # seen from a pod with its own cgroup namespace (a DaemonSet looking at the host's processes)
    (f"/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope", "containerd", UID),
    # cgroup v1, cgroupfs driver
    (f"/docker/{ID}", "docker", ""),
    (f"/kubepods/burstable/pod{UID}/{ID}", "kubernetes", UID),
    (f"/kubepods/pod{UID}/{ID}", "kubernetes", UID),
    (f"/kubepods/besteffort/pod{UID}/crio-{ID}", "cri-o", UID),
    (f"/libpod_parent/libpod-{ID}", "podman", ""),
])
def test_runtime_container_and_pod_from_every_runtime_and_cgroup_version(path: str, runtime: str,
                                                                         pod_uid: str) -> None:
    assert procfs.container_from_cgroup(path) == procfs.ContainerRef(runtime, ID)
    assert procfs.pod_uid_from_cgroup(path) == pod_uid


def test_whole_cgroup_files_of_v1_hybrid_and_v2_hosts() -> None:
    v1 = (f"12:pids:/kubepods/burstable/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n"
          f"1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n")
    hybrid = f"5:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
    v2 = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
    service = ("5:memory:/system.slice/nginx.service\n1:name=systemd:/system.slice/nginx.service\n"
               "0::/system.slice/nginx.service\n")
    assert procfs.parse_cgroup(v1) == f"/kubepods/burstable/pod{UID}/{ID}"
    assert procfs.parse_cgroup(hybrid) == f"/docker/{ID}"
    assert procfs.container_from_cgroup(procfs.parse_cgroup(v2)) == procfs.ContainerRef("containerd", ID)
    assert procfs.parse_cgroup(service) == "/system.slice/nginx.service"
