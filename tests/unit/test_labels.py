"""Targets and series labels: container, else systemd service, else process; service_name inference."""

from __future__ import annotations

import pytest

from agent.labels import Targeter, infer_service_name
from agent.metadata import unit_from_cgroup
from agent.model import ProcessInfo, ProfileSample
from agent.relabel import parse_rule
from tests.profile_factory import APP, make_profile, sym

CID = "3f2a6c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f"
FRAME = sym(APP.start + 0x10, APP, "main")


def proc(pid: int, exe: str = "/usr/bin/app", cgroup: str = "/", container_id: str = "",
         comm: str = "app") -> ProcessInfo:
    return ProcessInfo(pid=pid, incarnation=pid, start_time_ticks=1, comm=comm, exe=exe, cmdline=(exe, "-x"),
                       cgroup=cgroup, container_id=container_id, mappings=(APP,) if exe else ())


def smp(info: ProcessInfo, count: int) -> ProfileSample:
    labels: list[tuple[str, str]] = [("comm", info.comm)]
    if info.exe:
        labels.append(("exe", info.exe))
    if info.container_id:
        labels.append(("container_id", info.container_id))
    return ProfileSample(stack=(FRAME,), count=count, labels=tuple(labels), num_labels=(("pid", info.pid),),
                         process=info)


@pytest.mark.parametrize(("cgroup", "unit", "slice_"), [
    ("/system.slice/nginx.service", "nginx.service", "system.slice"),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "foo.service", "app.slice"),
    ("/user.slice/user-1000.slice/user@1000.service/init.scope", "user@1000.service", "user-1000.slice"),
    ("/user.slice/user-1000.slice/session-3.scope", "", ""),
    ("/", "", ""),
    ("/system.slice/docker-" + CID + ".scope", "", ""),
])
def test_systemd_unit_from_cgroup_path(cgroup: str, unit: str, slice_: str) -> None:
    assert unit_from_cgroup(cgroup) == (unit, slice_)


def test_one_target_per_container_service_and_process() -> None:
    # GIVEN two processes in one podman container, two in nginx.service, two plain ones, a kernel thread
    c1 = proc(10, "/bin/busybox", "/libpod_parent/libpod-" + CID, CID, "sh")
    c2 = proc(11, "/opt/server", "/libpod_parent/libpod-" + CID, CID, "server")
    s1 = proc(20, "/usr/sbin/nginx", "/system.slice/nginx.service", comm="nginx")
    s2 = proc(21, "/usr/sbin/nginx", "/system.slice/nginx.service", comm="nginx")
    p1 = proc(30, "/usr/bin/python3.11", "/user.slice/user-0.slice/session-1.scope", comm="python3")
    p2 = proc(31, "/usr/bin/make", "/", comm="make")
    kt = proc(2, "", "/", comm="kworker/0:1")
    profile = make_profile(smp(c1, 1), smp(c2, 5), smp(s1, 2), smp(s2, 3), smp(p1, 4), smp(p2, 6), smp(kt, 7))
    # WHEN split with a static label
    split = Targeter(static_labels=(("env", "prod"),)).split(profile)
    by_key = {t.key: t for t in split.targets}
    # THEN one target each, with the series labels of its kind
    assert set(by_key) == {f"container:{CID}", "systemd:nginx.service", "process:30", "process:31", "kernel"}
    assert dict(by_key[f"container:{CID}"].labels) == {
        "service_name": CID[:12], "host": "node-1", "container_id": CID, "env": "prod"}
    assert dict(by_key["systemd:nginx.service"].labels) == {
        "service_name": "nginx", "host": "node-1", "systemd_unit": "nginx.service", "env": "prod"}
    assert dict(by_key["process:30"].labels) == {
        "service_name": "python3.11", "host": "node-1", "pid": "30", "exe": "/usr/bin/python3.11", "env": "prod"}
    assert dict(by_key["kernel"].labels) == {"service_name": "kernel", "host": "node-1", "env": "prod"}
    # AND samples keep only comm and pid; every sample lands in exactly one target
    assert by_key["systemd:nginx.service"].profile.total_samples == 5
    assert sum(t.profile.total_samples for t in split.targets) == profile.total_samples
    for t in split.targets:
        for s in t.profile.samples:
            assert [k for k, _ in s.labels] == ["comm"] and [k for k, _ in s.num_labels] == ["pid"]


def test_relabel_rules_see_meta_labels_and_can_drop_targets() -> None:
    a = proc(40, "/usr/bin/redis-server", comm="redis-server")
    b = proc(41, "/usr/bin/sleep", comm="sleep")
    rules = (
        parse_rule({"action": "drop", "source_labels": ["__meta_process_comm"], "regex": "sleep"}, "r[0]"),
        parse_rule({"source_labels": ["__meta_process_cmdline"], "regex": "\\S+ (.*)", "target_label": "args"}, "r[1]"),
        parse_rule({"action": "labeldrop", "regex": "service_name"}, "r[2]"),
    )
    split = Targeter(rules=rules).split(make_profile(smp(a, 1), smp(b, 1)))
    assert split.dropped_by_rules == 1
    (target,) = split.targets
    labels = dict(target.labels)
    assert labels["args"] == "-x"
    assert labels["service_name"] == "redis-server"  # never empty: inferred again after the rules
    assert not [k for k in labels if k.startswith("__")]


def test_a_targets_labels_come_from_its_busiest_process_summed_over_its_samples() -> None:
    # GIVEN a container where sh has three samples of 2 (6 in all) and server one of 5
    sh = proc(10, "/bin/busybox", "/libpod_parent/libpod-" + CID, CID, "sh")
    server = proc(11, "/opt/server", "/libpod_parent/libpod-" + CID, CID, "server")
    rule = parse_rule({"source_labels": ["__meta_process_comm"], "target_label": "busiest"}, "r[0]")
    profile = make_profile(smp(sh, 2), smp(server, 5), smp(sh, 2), smp(sh, 2))
    # WHEN split with a rule that copies the process's comm into a label
    (target,) = Targeter(rules=(rule,)).split(profile).targets
    # THEN the label is sh's, and the target holds all four samples in their order
    assert dict(target.labels)["busiest"] == "sh"
    assert [s.count for s in target.profile.samples] == [2, 5, 2, 2]


def test_samples_without_process_info_are_targets_by_their_own_labels() -> None:
    # GIVEN samples built without the collector: pid and exe only in their labels, two of pid 7
    def bare(pid: int, count: int) -> ProfileSample:
        return ProfileSample(stack=(FRAME,), count=count, labels=(("comm", "tool"), ("exe", "/usr/bin/tool")),
                             num_labels=(("pid", pid),))
    profile = make_profile(bare(7, 1), bare(8, 2), bare(7, 3))
    # WHEN split
    by_key = {t.key: t for t in Targeter().split(profile).targets}
    # THEN one process target per pid, samples trimmed to comm and pid
    assert {k: [s.count for s in t.profile.samples] for k, t in by_key.items()} == {"process:7": [1, 3],
                                                                                   "process:8": [2]}
    assert by_key["process:7"].profile.samples[0].labels == (("comm", "tool"),)


@pytest.mark.parametrize(("meta", "expected"), [
    ({"__meta_kubernetes_pod_annotation_pyroscope_io_service_name": "checkout",
      "__meta_kubernetes_namespace": "shop", "__meta_kubernetes_pod_container_name": "api"}, "checkout"),
    ({"__meta_kubernetes_namespace": "shop", "__meta_kubernetes_pod_container_name": "api",
      "__meta_container_name": "k8s_api"}, "shop/api"),
    ({"__meta_container_name": "web-1", "__meta_process_exe_name": "nginx"}, "web-1"),
    ({"__meta_container_id": "3f2a6c1d9e8b" + "0" * 52, "__meta_process_exe_name": "nginx"}, "3f2a6c1d9e8b"),
    ({"__meta_systemd_unit": "postgresql@15-main.service", "__meta_process_exe_name": "postgres"},
     "postgresql@15-main"),
    ({"__meta_process_exe_name": "python3.11", "__meta_process_comm": "python3"}, "python3.11"),
    ({"__meta_process_comm": "kthreadd"}, "kthreadd"),
    ({}, "unknown"),
])
def test_service_name_inference_order(meta: dict[str, str], expected: str) -> None:
    assert infer_service_name(meta) == expected


def test_processes_gone_before_they_were_read_are_one_target_per_comm() -> None:
    # GIVEN three `true` processes and one `sed` that exited before their snapshot (nothing but
    # comm known), and a live `true` that was read
    def gone(pid: int, comm: str) -> ProcessInfo:
        return ProcessInfo(pid=pid, incarnation=pid, start_time_ticks=0, comm=comm, exe="", cmdline=(), cgroup="",
                           container_id="", mappings=(), alive=False)
    dead = [gone(100, "true"), gone(101, "true"), gone(102, "true"), gone(103, "sed")]
    live = proc(104, "/usr/bin/true", comm="true")
    profile = make_profile(*(smp(info, n) for info, n in zip(dead, (1, 2, 3, 4), strict=True)), smp(live, 5))
    # WHEN split
    by_key = {t.key: t for t in Targeter().split(profile).targets}
    # THEN the dead `true`s are one target and `sed` another, labelled by comm and without a pid
    # series label; the live one stays a process target
    assert set(by_key) == {"gone:true", "gone:sed", "process:104"}
    assert dict(by_key["gone:true"].labels) == {"service_name": "true", "host": "node-1"}
    assert dict(by_key["gone:sed"].labels) == {"service_name": "sed", "host": "node-1"}
    assert dict(by_key["process:104"].labels)["pid"] == "104"
    # AND each sample keeps its own pid
    assert [(s.count, s.num_labels) for s in by_key["gone:true"].profile.samples] == [
        (1, (("pid", 100),)), (2, (("pid", 101),)), (3, (("pid", 102),))]
