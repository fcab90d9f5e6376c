"""debuginfod: fetched by build-id from a fake server on 127.0.0.1, cached, bounded, never blocking.

The fake server serves ``/buildid/<hex>/debuginfo`` from a dict and counts requests; answers
are judged against addr2line on the unstripped binary.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sym_build import Binaries, DebugVariants
from sym_helpers import readelf_build_id
from test_sym_dwarf import _addr2line, _addresses, _frames, _same

from symbolizer.debuginfod import BackgroundFetcher, Debuginfod, urls_from_env
from symbolizer.offline import FileSymbolizer
from symbolizer.source import NamedFrame


class _Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.delay_s = 0.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                server.requests.append(self.path)
                time.sleep(server.delay_s)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    fake = _Server()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def _serve_debug(server: _Server, binaries: Binaries, variants: DebugVariants) -> str:
    hexid = readelf_build_id(binaries.pie).hex()
    server.files[f"/buildid/{hexid}/debuginfo"] = variants.debug.read_bytes()
    return hexid


def test_urls_from_env() -> None:
    assert urls_from_env({"DEBUGINFOD_URLS": "https://a/ ftp://b http://c"}) == ("https://a", "http://c")
    assert urls_from_env({}) == ()


def test_stripped_binary_named_with_lines_from_debuginfod(
    server: _Server, binaries: Binaries, debug_variants: DebugVariants, tmp_path: Path
) -> None:
    # GIVEN a stripped binary (no link, no local debug file) whose debug file only the server has
    _serve_debug(server, binaries, debug_variants)
    debuginfod = Debuginfod([server.url], str(tmp_path / "cache"))
    # WHEN it is named offline
    symbolizer = FileSymbolizer(str(debug_variants.stripped), debug_roots=(), debuginfod=debuginfod)
    addrs = _addresses(binaries.pie)
    got = [symbolizer.frames(a) for a in addrs]
    # THEN functions and lines agree with addr2line on the unstripped binary
    expected = _frames(_addr2line(binaries.pie, addrs))
    ours = [[(f.function or "??", str(f.line) if f.file else "?") for f in (frames or (NamedFrame("", "", "", 0),))]
            for frames in got]
    assert _same(ours, expected)
    assert debuginfod.counters.get("downloads") == 1
    # AND a second symbolizer uses the cached file without asking the server
    before = len(server.requests)
    FileSymbolizer(str(debug_variants.stripped), debug_roots=(), debuginfod=debuginfod)
    assert len(server.requests) == before


def test_unknown_build_id_is_remembered(server: _Server, tmp_path: Path) -> None:
    debuginfod = Debuginfod([server.url], str(tmp_path))
    assert debuginfod.fetch(b"\x12\x34\x56") is None
    assert debuginfod.fetch(b"\x12\x34\x56") is None
    assert len(server.requests) == 1 and debuginfod.counters["negative_hits"] == 1


def test_slow_server_times_out(server: _Server, tmp_path: Path) -> None:
    server.delay_s = 3.0
    server.files["/buildid/abcd/debuginfo"] = b"x"
    debuginfod = Debuginfod([server.url], str(tmp_path), timeout_s=(0.5, 0.5))
    # the server would answer with the file after 3 s: None and an error mean the timeout cut it
    assert debuginfod.fetch(bytes.fromhex("abcd")) is None
    assert debuginfod.counters["errors"] == 1


def test_file_above_the_cap_is_not_kept(server: _Server, tmp_path: Path) -> None:
    server.files["/buildid/abcd/debuginfo"] = b"x" * 5000
    debuginfod = Debuginfod([server.url], str(tmp_path), max_file=1000)
    assert debuginfod.fetch(bytes.fromhex("abcd")) is None
    assert not [n for _, _, names in os.walk(tmp_path / ".build-id") for n in names]


def test_cache_is_bounded(server: _Server, tmp_path: Path) -> None:
    for hexid in ("aa01", "aa02", "aa03"):
        server.files[f"/buildid/{hexid}/debuginfo"] = b"y" * 4000
    debuginfod = Debuginfod([server.url], str(tmp_path), max_bytes=9000)
    for hexid in ("aa01", "aa02", "aa03"):
        assert debuginfod.fetch(bytes.fromhex(hexid)) is not None
        time.sleep(0.01)
    kept = [n for _, _, names in os.walk(tmp_path / ".build-id") for n in names]
    assert len(kept) == 2 and debuginfod.counters["evicted"] == 1


def test_background_fetcher_never_blocks(server: _Server, tmp_path: Path) -> None:
    # GIVEN a server that takes 1 s per answer
    server.delay_s = 1.0
    server.files["/buildid/abcd/debuginfo"] = b"z"
    fetcher = BackgroundFetcher(Debuginfod([server.url], str(tmp_path)))
    # WHEN a build-id is requested (twice), THEN the calls return before the file could have
    # arrived (had they waited for the server, it would be there)
    fetcher.request(bytes.fromhex("abcd"))
    fetcher.request(bytes.fromhex("abcd"))
    assert fetcher.arrived() == []
    # AND the file arrives later, fetched once
    deadline = time.monotonic() + 10
    arrived: list[bytes] = []
    while not arrived and time.monotonic() < deadline:
        arrived = fetcher.arrived()
        time.sleep(0.05)
    fetcher.close()
    assert arrived == [bytes.fromhex("abcd")] and len(server.requests) == 1
