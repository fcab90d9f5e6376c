"""Delivery to real HTTP servers on 127.0.0.1: what arrives (decoded with the real schemas, every
embedded pprof read by Google's pprof) and how faults are survived, each bounded in time.

Synthetic profiles go through the real exporters in-process; no root needed.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import RemoteConfig
from agent.exporters.otlp import OtlpExporter
from agent.exporters.pyroscope import PyroscopeExporter
from agent.labels import Targeter
from agent.model import Profile, TargetProfile
from tests.fake_backend import always, decode_otlp, decode_push, fake_server, free_port
from tests.pprof_cli import traces
from tests.profile_factory import APP, KERNEL, LIBC, large_profile, make_profile, sample, sym

MAIN = sym(APP.start + 0x100, APP, "main")
WORK = sym(APP.start + 0x200, APP, "work")
MEMCPY = sym(LIBC.start + 0x300, LIBC, "memcpy")
KFUNC = sym(KERNEL.start + 0x40, KERNEL, "do_syscall_64")


def workload_profile() -> Profile:
    """Two stacks of pid 42 ("server"): work<-main x 30, memcpy<-work<-main x 10 (+ a kernel frame)."""
    return make_profile(sample(WORK, MAIN, count=30), sample(KFUNC, MEMCPY, WORK, MAIN, count=10))


def one_target(profile: Profile | None = None) -> TargetProfile:
    split = Targeter(static_labels=(("env", "test"),)).split(profile or workload_profile())
    assert len(split.targets) == 1
    return split.targets[0]


def one_process(profile: Profile) -> Profile:
    """``profile``'s samples as one process's (pid 7, comm x): one target."""
    samples = tuple(replace(s, labels=(("comm", "x"),), num_labels=(("pid", 7),)) for s in profile.samples)
    return replace(profile, samples=samples)


def remote(url: str, **kw: object) -> RemoteConfig:
    defaults: dict[str, object] = {"timeout_s": 2.0, "initial_backoff_s": 0.2, "max_backoff_s": 1.0,
                                   "max_age_s": 120.0}
    defaults.update(kw)
    return RemoteConfig(url=url, **defaults)  # type: ignore[arg-type]


def wait_for(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def pprof_of(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


EXPECTED_TRACES = [
    (("do_syscall_64", "memcpy", "work", "main"), 10, (("comm", "server"), ("pid", "42"))),
    (("work", "main"), 30, (("comm", "server"), ("pid", "42"))),
]


def test_pyroscope_push_sends_one_labelled_series_with_a_valid_pprof(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN a fake Pyroscope and the push exporter
    with fake_server() as server:
        exporter = PyroscopeExporter(remote(server.url))
        # WHEN one target's profile is exported and the exporter closes
        exporter.export(one_target())
        stats = exporter.close(5)
    # THEN one connect unary call arrived, in protobuf
    assert len(server.requests) == 1
    req = server.requests[0]
    assert req.path == "/push.v1.PusherService/Push"
    assert req.headers["Content-Type"] == "application/proto"
    assert req.headers["Connect-Protocol-Version"] == "1"
    (series,) = decode_push(req.body)
    # AND the series carries the metric name, the inferred service and the target's labels
    assert series.labels == {"__name__": "process_cpu", "service_name": "server", "host": "node-1",
                             "pid": "42", "env": "test"}
    assert len(series.profiles) == 1 and uuid.UUID(series.ids[0]).version == 4
    # AND Google's pprof reads the embedded gzip pprof with the stacks and counts that went in
    assert series.profiles[0][:2] == b"\x1f\x8b"
    assert traces(pprof_tool, pprof_of(tmp_path, series.profiles[0], "p.pb.gz")) == EXPECTED_TRACES
    assert (stats.produced, stats.sent, sum(stats.dropped.values())) == (1, 1, 0)


def test_an_intervals_targets_share_one_request_and_are_counted_one_by_one() -> None:
    two = make_profile(sample(WORK, MAIN, count=3, pid=1, comm="a"), sample(MAIN, count=2, pid=2, comm="b"))
    targets = Targeter().split(two).targets
    with fake_server() as server, fake_server() as otlp_server:
        exporters = [PyroscopeExporter(remote(server.url)), OtlpExporter(remote(otlp_server.url))]
        for exporter in exporters:
            exporter.export_all(targets)
        stats = [exporter.close(5) for exporter in exporters]
    (req,) = server.requests
    assert sorted(s.labels["service_name"] for s in decode_push(req.body)) == ["a", "b"]
    (otlp_req,) = otlp_server.requests
    assert len(decode_otlp(otlp_req.body).resource_profiles) == 2
    assert [(s.produced, s.sent) for s in stats] == [(2, 2), (2, 2)]


@pytest.mark.parametrize(("settings", "header", "value"), [
    ({"basic_auth_user": "123456", "basic_auth_password": "glc_token"}, "Authorization",
     "Basic " + base64.b64encode(b"123456:glc_token").decode()),
    ({"bearer_token": "s3cret"}, "Authorization", "Bearer s3cret"),
    ({"tenant_id": "team-a"}, "X-Scope-OrgID", "team-a"),
    ({"headers": (("X-Extra", "yes"),)}, "X-Extra", "yes"),
])
def test_auth_and_extra_headers_are_sent(settings: dict[str, object], header: str, value: str) -> None:
    with fake_server() as server:
        exporter = PyroscopeExporter(remote(server.url, **settings))
        exporter.export(one_target())
        exporter.close(5)
    assert server.requests[0].headers[header] == value


def test_legacy_ingest_names_the_app_with_labels(tmp_path: Path, pprof_tool: Path) -> None:
    with fake_server() as server:
        exporter = PyroscopeExporter(remote(server.url, api="ingest"))
        exporter.export(one_target())
        exporter.close(5)
    (req,) = server.requests
    assert req.path == "/ingest"
    assert req.query["name"] == ["server{env=test,host=node-1,pid=42}"]
    assert req.query["format"] == ["pprof"] and req.query["sampleRate"] == ["99"]
    start = 1_700_000_000
    assert (req.query["from"], req.query["until"]) == ([str(start)], [str(start + 10)])
    assert traces(pprof_tool, pprof_of(tmp_path, req.body, "i.pb.gz")) == EXPECTED_TRACES


def test_otlp_request_decodes_with_the_opentelemetry_classes() -> None:
    with fake_server() as server:
        exporter = OtlpExporter(remote(server.url))
        exporter.export(one_target())
        exporter.close(5)
    (req,) = server.requests
    assert req.path == "/v1development/profiles"
    assert req.headers["Content-Type"] == "application/x-protobuf"
    request = decode_otlp(req.body)
    d = request.dictionary
    # index 0 of every table is the zero value
    assert d.string_table[0] == "" and d.stack_table[0].location_indices == []
    assert d.location_table[0].address == 0 and d.function_table[0].name_strindex == 0
    (rp,) = request.resource_profiles
    attrs = {a.key: (a.value.string_value or a.value.int_value) for a in rp.resource.attributes}
    assert attrs == {"service.name": "server", "host.name": "node-1", "process.pid": 42, "env": "test"}
    (profile,) = rp.scope_profiles[0].profiles
    s = d.string_table
    assert (s[profile.sample_type.type_strindex], s[profile.sample_type.unit_strindex]) == ("samples", "count")
    assert (s[profile.period_type.type_strindex], s[profile.period_type.unit_strindex]) == ("cpu", "nanoseconds")
    assert profile.period == 1_000_000_000 // 99
    got = {}
    for smp in profile.samples:
        names = []
        for li in d.stack_table[smp.stack_index].location_indices:
            loc = d.location_table[li]
            names.extend(s[d.function_table[line.function_index].name_strindex] for line in loc.lines)
        thread = [d.attribute_table[i].value.string_value for i in smp.attribute_indices]
        got[tuple(names)] = (list(smp.values), thread)
    assert got == {("work", "main"): ([30], ["server"]),
                   ("do_syscall_64", "memcpy", "work", "main"): ([10], ["server"])}
    mapping_files = {s[m.filename_strindex] for m in d.mapping_table[1:]}
    assert mapping_files == {APP.path, LIBC.path, KERNEL.path}


def test_a_profile_over_the_sample_limit_is_split_and_nothing_is_lost(tmp_path: Path, pprof_tool: Path) -> None:
    # GIVEN one target with 20 000 distinct stacks (over Pyroscope's 16 000 per profile)
    big = one_process(large_profile(20_000))
    with fake_server() as server:
        exporter = PyroscopeExporter(remote(server.url))
        exporter.export(one_target(big))
        stats = exporter.close(30)
    # THEN two profiles arrived (batched in one request), each within the limits, and pprof
    # counts every sample once
    pushed = [series for req in server.requests for series in decode_push(req.body)]
    assert len(pushed) == 2 and stats.sent == 2
    total = 0
    for i, series in enumerate(pushed):
        assert series.labels["pid"] == "7"
        path = pprof_of(tmp_path, series.profiles[0], f"part{i}.pb.gz")
        part = traces(pprof_tool, path)
        assert len(part) <= 16_000
        total += sum(count for _, count, _ in part)
    assert total == big.total_samples


# -- faults ------------------------------------------------------------------------------------


def _first_fail_then_ok(status: int, headers: dict[str, str], failures: int = 1):  # type: ignore[no-untyped-def]
    return lambda n, _t: (status, headers) if n < failures else (200, {})


def test_429_waits_for_retry_after() -> None:
    with fake_server(_first_fail_then_ok(429, {"Retry-After": "2"})) as server:
        exporter = PyroscopeExporter(remote(server.url))
        exporter.export(one_target())
        assert wait_for(lambda: len(server.ok()) == 1, 10)
        stats = exporter.close(1)
    first, second = server.requests
    assert second.at - first.at >= 1.9  # the backoff alone would be <= 0.2 s
    assert (stats.sent, stats.retries) == (1, 1)


def test_400_is_not_retried() -> None:
    with fake_server(always(400)) as server:
        exporter = PyroscopeExporter(remote(server.url))
        exporter.export(one_target())
        time.sleep(2.0)  # ten backoffs' worth
        stats = exporter.close(1)
    assert len(server.requests) == 1
    assert stats.dropped["rejected"] == 1 and stats.sent == 0 and stats.balanced


def test_connection_refused_is_retried_and_shutdown_drops_within_grace() -> None:
    exporter = PyroscopeExporter(remote(f"http://127.0.0.1:{free_port()}"))
    exporter.export(one_target())
    assert wait_for(lambda: exporter.stats().retries >= 2, 10)
    started = time.monotonic()
    stats = exporter.close(1.0)
    assert time.monotonic() - started < 2.0
    assert stats.sent == 0 and stats.dropped["shutdown"] == 1 and stats.produced == 1


def test_server_that_never_answers_hits_the_request_timeout() -> None:
    with fake_server(lambda _n, _t: None) as server:
        exporter = PyroscopeExporter(remote(server.url, timeout_s=1.0, max_age_s=2.5))
        exporter.export(one_target())
        exporter.export(one_target())
        # THEN each attempt gives up after ~1 s, and a payload older than max_age_s is dropped
        assert wait_for(lambda: exporter.stats().dropped["expired"] >= 1, 10)
        started = time.monotonic()
        stats = exporter.close(1.5)
        assert time.monotonic() - started < 3.0
    assert stats.sent == 0 and stats.produced == 2
    assert stats.dropped["expired"] + stats.dropped["shutdown"] == 2
    assert len(server.requests) >= 2


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_untrusted_tls_certificate_is_refused(self_signed: tuple[Path, Path]) -> None:
    with fake_server(tls=self_signed) as server:
        exporter = PyroscopeExporter(remote(server.url))
        exporter.export(one_target())
        assert wait_for(lambda: exporter.stats().dropped["rejected"] == 1, 10)
        stats = exporter.close(1)
    assert server.requests == [] and stats.sent == 0  # nothing was sent over the unverified connection


def test_tls_with_the_ca_file_is_trusted(self_signed: tuple[Path, Path]) -> None:
    with fake_server(tls=self_signed) as server:
        exporter = PyroscopeExporter(remote(server.url, ca_file=str(self_signed[0])))
        exporter.export(one_target())
        stats = exporter.close(5)
    assert stats.sent == 1 and len(server.requests) == 1


@pytest.mark.slow
def test_503_for_60_s_then_recovery_keeps_memory_bounded_and_accounts_for_everything() -> None:
    # GIVEN a server answering 503 for its first 60 s, and a 2 MiB queue cap
    outage_s = 60.0
    cap = 2 * 2**20

    def script(_n: int, t: float) -> tuple[int, dict[str, str]]:
        return (503, {}) if t < outage_s else (200, {})

    target = one_target(one_process(large_profile(2000, seed=3)))
    with fake_server(script) as server:
        exporter = PyroscopeExporter(remote(server.url, queue_bytes=cap, max_backoff_s=2.0))
        payload_bytes = len(exporter.encode([target])[0].body)
        peak_queue = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak_queue
            while not stop.is_set():
                peak_queue = max(peak_queue, exporter.stats().queue_bytes)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        # WHEN a profile is produced every 0.5 s through the outage and 5 s beyond
        while time.monotonic() - server.started < outage_s + 5:
            exporter.export(target)
            time.sleep(0.5)
        recovered = server.started + outage_s
        assert wait_for(lambda: exporter.stats().queued == 0 and exporter.stats().in_flight == 0, 30)
        stats = exporter.close(5)
        stop.set()
        watcher.join()
    # THEN the queue never held more than its cap, and it dropped the oldest to stay there
    assert peak_queue <= cap
    assert stats.dropped["queue_full"] > 0 and payload_bytes * 5 < cap
    # AND delivery resumed within one max backoff (+1 s) of recovery
    first_ok = min(r.at for r in server.ok())
    assert first_ok - recovered < 3.0
    # AND every profile is accounted for
    assert stats.produced == stats.sent + sum(stats.dropped.values())
    assert stats.sent == len(server.ok()) and stats.retries > 10


def test_close_gives_up_on_a_request_still_in_flight_and_counts_it_once() -> None:
    # GIVEN a request stuck on a server that never answers, with a long per-request timeout
    with fake_server(lambda _n, _t: None) as server:
        exporter = PyroscopeExporter(remote(server.url, timeout_s=30.0))
        exporter.export(one_target())
        assert wait_for(lambda: len(server.requests) == 1, 10)
        # WHEN the exporter closes with a 1 s grace period
        started = time.monotonic()
        stats = exporter.close(1.0)
        took = time.monotonic() - started
    # THEN it returns in time and the profile is dropped (shutdown), not left in flight
    assert took < 2.5
    assert (stats.produced, stats.sent, stats.dropped["shutdown"], stats.in_flight) == (1, 0, 1, 0)


def test_pyroscope_series_keep_at_most_30_labels_name_and_service_first() -> None:
    from agent.exporters.pyroscope import series_labels

    many = Targeter(static_labels=tuple((f"k{i:02}", "v") for i in range(40))).split(workload_profile()).targets[0]
    labels = series_labels(many)
    assert len(labels) == 30
    assert labels[:2] == [("__name__", "process_cpu"), ("service_name", "server")]
