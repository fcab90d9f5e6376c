"""A fake Pyroscope / OTLP server on 127.0.0.1 that records what arrives and answers as scripted.

Decoding uses the real schemas: Pyroscope's PushRequest through protobuf (field numbers from
grafana/pyroscope's push.proto, written out here independently of agent/proto), OTLP through the
``opentelemetry-proto`` package's generated classes. Embedded pprofs are left to Google's pprof.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2

Reply = tuple[int, dict[str, str]]  # status, headers
Script = Callable[[int, float], Reply | None]  # (request number from 0, seconds since start) -> reply; None: hang


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    status: int


@dataclass
class FakeServer:
    url: str
    requests: list[Received] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def ok(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]


def always(status: int = 200, headers: dict[str, str] | None = None) -> Script:
    return lambda _n, _t: (status, dict(headers or {}))


@contextmanager
def fake_server(script: Script | None = None, tls: tuple[Path, Path] | None = None) -> Iterator[FakeServer]:
    """A server in a thread for the ``with`` block; ``tls`` = (cert, key) serves HTTPS."""
    script = script or always()
    lock = threading.Lock()
    hang = threading.Event()

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                n = len(state.requests)
                reply = script(n, time.monotonic() - state.started)
                parsed = urlsplit(self.path)
                state.requests.append(Received(parsed.path, parse_qs(parsed.query), dict(self.headers.items()),
                                               body, time.monotonic(), reply[0] if reply else 0))
            if reply is None:  # accept, read, never answer (until the server stops)
                hang.wait(120)
                return
            status, headers = reply
            payload = b"{}" if status < 300 else f"status {status}".encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(Handler, tls) as url:
        state = FakeServer(url=url)
        try:
            yield state
        finally:
            hang.set()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1, no request log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler], tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 in a thread for the ``with`` block; yields the base URL.
    ``tls`` = (cert, key) serves HTTPS."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- Pyroscope PushRequest, written from push.proto / types.proto field numbers --------------------
def _push_classes() -> dict[str, Any]:
    fdp = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="fake_push.proto", package="fake", syntax="proto3")

    def msg(name: str, *fields: tuple[str, int, int, str]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            label = fdp.LABEL_REPEATED if fname in ("series", "labels", "samples") else fdp.LABEL_OPTIONAL
            added = m.field.add(name=fname, number=number, type=ftype, label=label)  # type: ignore[arg-type]
            if type_name:
                added.type_name = type_name

    msg("LabelPair", ("name", 1, fdp.TYPE_STRING, ""), ("value", 2, fdp.TYPE_STRING, ""))
    msg("RawSample", ("raw_profile", 1, fdp.TYPE_BYTES, ""), ("ID", 2, fdp.TYPE_STRING, ""))
    msg("RawProfileSeries", ("labels", 1, fdp.TYPE_MESSAGE, ".fake.LabelPair"),
        ("samples", 2, fdp.TYPE_MESSAGE, ".fake.RawSample"))
    msg("PushRequest", ("series", 1, fdp.TYPE_MESSAGE, ".fake.RawProfileSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"fake.{name}"))
            for name in ("PushRequest",)}


_PUSH = _push_classes()


@dataclass
class PushedSeries:
    labels: dict[str, str]
    profiles: list[bytes]  # gzip pprof as sent
    ids: list[str]


def decode_push(body: bytes) -> list[PushedSeries]:
    request = _PUSH["PushRequest"].FromString(body)
    return [PushedSeries({lp.name: lp.value for lp in s.labels}, [r.raw_profile for r in s.samples],
                         [r.ID for r in s.samples]) for s in request.series]


def decode_otlp(body: bytes) -> Any:
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return profiles_service_pb2.ExportProfilesServiceRequest.FromString(body)
