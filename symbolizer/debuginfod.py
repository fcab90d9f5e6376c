"""Symbolizer stage: debug files fetched from debuginfod servers, by build-id, off the sampling path.

In: server URLs (``DEBUGINFOD_URLS``, space-separated, or the config), a cache directory, and
build-ids of binaries that lack debug information. Out: files laid out as a debug root,
``<cache>/.build-id/xx/yyyy.debug``, so ``symbolizer.debuginfo`` finds them like any installed
``-dbgsym`` package (and verifies the build-id before use).

``fetch(build_id)`` asks each server ``GET {url}/buildid/{hex}/debuginfo`` in turn (connect and
read timeouts, a size cap, streamed to a temporary file then renamed) and returns the path or
None. A build-id that no server has is remembered (``<cache>/.negative/<hex>``) for
``negative_ttl_s``; the cache directory is kept under ``max_bytes`` (least recently used first).
``BackgroundFetcher`` runs fetches on one daemon thread: the sampling loop only queues
build-ids (never blocks) and, once per interval, collects the ones that arrived.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = (3.0, 30.0)  # connect, read
DEFAULT_MAX_FILE = 2 << 30
DEFAULT_MAX_BYTES = 4 << 30
NEGATIVE_TTL_S = 3600.0
CHUNK = 1 << 20
MAX_QUEUE = 1024
_HEX = re.compile(r"^[0-9a-f]{2,128}$")


def urls_from_env(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The servers ``DEBUGINFOD_URLS`` names (space-separated), http(s) only."""
    value = (environ if environ is not None else dict(os.environ)).get("DEBUGINFOD_URLS", "")
    return tuple(url.rstrip("/") for url in value.split() if url.startswith(("http://", "https://")))


class Debuginfod:
    """Synchronous fetcher with an on-disk positive and negative cache."""

    def __init__(self, urls: Sequence[str], cache_dir: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_file: int = DEFAULT_MAX_FILE, timeout_s: tuple[float, float] = DEFAULT_TIMEOUT_S,
                 negative_ttl_s: float = NEGATIVE_TTL_S) -> None:
        self.urls = tuple(urls)
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.max_file = max_file
        self.timeout_s = timeout_s
        self.negative_ttl_s = negative_ttl_s
        self.counters: dict[str, int] = {}
        import requests  # only an agent with servers configured pays for it (~12 MB resident with TLS)

        self._session: requests.Session = requests.Session()

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def path_of(self, build_id: bytes) -> str:
        hexid = build_id.hex()
        return os.path.join(self.cache_dir, ".build-id", hexid[:2], f"{hexid[2:]}.debug")

    def fetch(self, build_id: bytes) -> str | None:
        """The cached or downloaded debug file of ``build_id``, or None (counted by outcome)."""
        hexid = build_id.hex()
        if not self.urls or not _HEX.match(hexid):
            return None
        target = self.path_of(build_id)
        if os.path.isfile(target):
            self._count("hits")
            return target
        negative = os.path.join(self.cache_dir, ".negative", hexid)
        with contextlib.suppress(OSError):
            if time.time() - os.stat(negative).st_mtime < self.negative_ttl_s:
                self._count("negative_hits")
                return None
        for url in self.urls:
            if self._download(f"{url}/buildid/{hexid}/debuginfo", target):
                self._count("downloads")
                self._bound(keep=target)
                return target
        self._count("not_found")
        _touch(negative)
        return None

    def _download(self, url: str, target: str) -> bool:
        import requests

        temp = ""
        try:
            with self._session.get(url, timeout=self.timeout_s, stream=True) as response:
                if response.status_code != 200:
                    return False
                _make_dirs(os.path.dirname(target))
                fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target))
                size = 0
                with os.fdopen(fd, "wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        size += len(chunk)
                        if size > self.max_file:
                            raise ValueError("above the size cap")
                        out.write(chunk)
            os.replace(temp, target)
            return True
        except (requests.RequestException, OSError, ValueError) as err:
            self._count("errors")
            log.debug("debuginfod %s: %s", url, err)
            if temp:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            return False

    def _bound(self, keep: str) -> None:
        files = []
        for directory, _, names in os.walk(os.path.join(self.cache_dir, ".build-id")):
            for name in names:
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    files.append((st.st_mtime, path, st.st_size))
        total = sum(size for _, _, size in files)
        for _, path, size in sorted(files):
            if total <= self.max_bytes:
                break
            if path != keep:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    total -= size
                    self._count("evicted")


class BackgroundFetcher:
    """Runs ``Debuginfod.fetch`` on one daemon thread; ``request`` never blocks."""

    def __init__(self, debuginfod: Debuginfod) -> None:
        self.debuginfod = debuginfod
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_QUEUE)
        self._asked: set[bytes] = set()
        self._done: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="hostflame-debuginfod", daemon=True)
        self._thread.start()

    def request(self, build_id: bytes) -> None:
        if not build_id or build_id in self._asked:
            return
        self._asked.add(build_id)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(build_id)

    def arrived(self) -> list[bytes]:
        """Build-ids whose debug file arrived since the last call."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def close(self, timeout_s: float = 1.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            build_id = self._queue.get()
            if build_id is None:
                return
            try:
                found = self.debuginfod.fetch(build_id)
            except Exception:  # a bug here must not end the thread silently
                log.exception("debuginfod fetch failed")
                continue
            if found is not None:
                with self._lock:
                    self._done.append(build_id)


def _make_dirs(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def _touch(path: str) -> None:
    with contextlib.suppress(OSError):
        _make_dirs(os.path.dirname(path))
        with open(path, "a"):
            pass
        os.utime(path)
