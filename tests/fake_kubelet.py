"""A fake kubelet / API server on 127.0.0.1: HTTPS with a certificate from a test CA made at
test time (``cryptography``). To callers with the right bearer token it answers ``GET /pods``
(the kubelet: every pod it was given) and ``GET /api/v1/pods?fieldSelector=spec.nodeName=N``
(the API server: the pods of node N only); anything else is 401/404."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fake_backend import QuietHandler, serving


@dataclass
class TestCA:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_ca(directory: Path) -> TestCA:
    """A CA and a server certificate for IP 127.0.0.1 signed by it, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostflame test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelet")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = TestCA(directory / "ca.crt", directory / "kubelet.crt", directory / "kubelet.key")
    out.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return out


@dataclass
class FakeKubelet:
    url: str
    pods: dict[str, Any]
    token: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, authorization)


@contextmanager
def fake_kubelet(ca: TestCA, pods: dict[str, Any], token: str) -> Iterator[FakeKubelet]:
    lock = threading.Lock()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            auth = self.headers.get("Authorization", "")
            url = urlsplit(self.path)
            with lock:
                state.requests.append((self.path, auth))
                document = state.pods
            status = 200
            if auth != f"Bearer {token}":
                status = 401
            elif url.path == "/api/v1/pods":
                selector = parse_qs(url.query).get("fieldSelector", [""])[0]
                node = selector.removeprefix("spec.nodeName=") if selector.startswith("spec.nodeName=") else None
                items = [p for p in document["items"] if p["spec"].get("nodeName") == node]
                document = {**document, "items": items}
            elif url.path != "/pods":
                status = 404
            body = json.dumps(document).encode() if status == 200 else f'{{"kind":"Status","code":{status}}}'.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler, (ca.cert_file, ca.key_file)) as url:
        state = FakeKubelet(url, pods, token)
        yield state
