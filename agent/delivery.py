"""Delivery: a byte-capped queue between the profile builder and one sender thread.

Stage: between the exporters' encoders and the network. In: ``Payload`` values (one ready
HTTP request each, for one profile) via ``offer``, which never blocks. Out: requests sent by
a daemon thread through a ``send`` callable, retried with jittered exponential backoff.

Accounting, in profiles (a payload may carry several), per delivery: ``produced`` = ``sent``
+ ``dropped`` (by cause) + ``queued`` + ``in_flight``; ``stats()`` returns a consistent snapshot. Causes: ``queue_full``
(the oldest payload is dropped to make room), ``rejected`` (a 4xx other than 408/429, or a
TLS verification failure: retrying cannot help), ``expired`` (still failing ``max_age_s``
after it was queued), ``shutdown`` (still queued when the grace period ended).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DROP_CAUSES", "Delivery", "DeliveryStats", "Outcome", "Payload", "RetryPolicy"]

log = logging.getLogger(__name__)

DROP_CAUSES = ("queue_full", "rejected", "expired", "shutdown")


@dataclass(frozen=True)
class Payload:
    """One request, ready to send, carrying ``profiles`` profiles (one per target part)."""

    body: bytes
    description: str  # for log lines: "3 profiles (api, db, ...)"
    params: tuple[tuple[str, str], ...] = ()  # query parameters (Pyroscope /ingest)
    profiles: int = 1
    queued_mono: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: ``ok``; else ``retry`` (with the server's Retry-After, if any) or not."""

    ok: bool
    retry: bool = False
    retry_after_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    max_age_s: float = 600.0  # a payload still failing this long after queueing is dropped (expired)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Jittered exponential backoff for retry ``attempt`` (1, 2, ...): a uniform draw between
        half and all of min(max, initial * 2**(attempt-1))."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        return float(ceiling * (0.5 + 0.5 * rng.random()))


@dataclass(frozen=True)
class DeliveryStats:
    produced: int
    sent: int
    dropped: dict[str, int]
    queued: int
    in_flight: int
    queue_bytes: int
    retries: int
    last_sent_mono: float  # 0.0 before the first success

    @property
    def balanced(self) -> bool:
        return self.produced == self.sent + sum(self.dropped.values()) + self.queued + self.in_flight


class Delivery:
    """A queue of at most ``max_bytes`` payload bytes and the thread that sends them in order."""

    def __init__(self, name: str, send: Callable[[Payload], Outcome], max_bytes: int,
                 policy: RetryPolicy | None = None, seed: int | None = None) -> None:
        self.name = name
        self._send = send
        self.max_bytes = max_bytes
        self.policy = policy or RetryPolicy()
        self._rng = random.Random(seed)
        self._queue: collections.deque[Payload] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False  # close() gave up on the request in flight and counted it
        self._deadline = float("inf")
        self._in_flight = self._queued = 0  # profiles
        self._produced = self._sent = self._retries = 0
        self._dropped = dict.fromkeys(DROP_CAUSES, 0)
        self._last_sent = 0.0
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"hostflame-send-{name}", daemon=True)
        self._thread.start()

    # -- builder side: never blocks on the network ---------------------------------------------
    def offer(self, payload: Payload) -> None:
        size = len(payload.body)
        with self._cond:
            self._produced += payload.profiles
            if self._closing:
                self._dropped["shutdown"] += payload.profiles
                return
            if size > self.max_bytes:
                self._dropped["queue_full"] += payload.profiles
                return
            while self._bytes + size > self.max_bytes and self._queue:
                old = self._queue.popleft()
                self._bytes -= len(old.body)
                self._queued -= old.profiles
                self._dropped["queue_full"] += old.profiles
            self._queue.append(payload)
            self._queued += payload.profiles
            self._bytes += size
            self._cond.notify_all()

    def stats(self) -> DeliveryStats:
        with self._cond:
            return DeliveryStats(produced=self._produced, sent=self._sent, dropped=dict(self._dropped),
                                 queued=self._queued, in_flight=self._in_flight, queue_bytes=self._bytes,
                                 retries=self._retries, last_sent_mono=self._last_sent)

    @property
    def last_error(self) -> str:
        return self._last_error

    def close(self, grace_s: float) -> DeliveryStats:
        """Keep sending for at most ``grace_s`` seconds, then drop what is left (cause
        ``shutdown``) and stop the thread. Returns the final stats."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + grace_s
            self._cond.notify_all()
        self._thread.join(max(0.0, grace_s) + 0.5)
        with self._cond:
            if self._thread.is_alive() and self._in_flight:  # a request still out: given up, counted once
                self._dropped["shutdown"] += self._in_flight
                self._in_flight = 0
                self._abandoned = True
            while self._queue:
                old = self._queue.popleft()
                self._bytes -= len(old.body)
                self._queued -= old.profiles
                self._dropped["shutdown"] += old.profiles
        return self.stats()

    # -- sender thread ---------------------------------------------------------------------------
    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (cut short at the shutdown deadline); False when past it."""
        with self._cond:
            end = min(time.monotonic() + seconds, self._deadline)
            while time.monotonic() < end:
                self._cond.wait(end - time.monotonic())
                end = min(end, self._deadline)
            return time.monotonic() < self._deadline

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or time.monotonic() >= self._deadline:
                    return
                payload = self._queue.popleft()
                self._bytes -= len(payload.body)
                self._queued -= payload.profiles
                self._in_flight = payload.profiles
            cause = self._deliver(payload)
            with self._cond:
                if self._abandoned:
                    return
                self._in_flight = 0
                if cause is None:
                    self._sent += payload.profiles
                    self._last_sent = time.monotonic()
                else:
                    self._dropped[cause] += payload.profiles

    def _deliver(self, payload: Payload) -> str | None:
        """Send with retries; None when sent, else the drop cause."""
        attempt = 0
        while True:
            try:
                outcome = self._send(payload)
            except Exception as exc:  # a bug in an encoder or transport must not kill the thread
                log.warning("%s: sending %s failed unexpectedly: %r", self.name, payload.description, exc)
                outcome = Outcome(ok=False, retry=False, detail=repr(exc))
            if outcome.ok:
                if attempt:
                    log.info("%s: delivered %s after %d retries", self.name, payload.description, attempt)
                return None
            self._last_error = outcome.detail
            if not outcome.retry:
                log.warning("%s: %s refused, not retried: %s", self.name, payload.description, outcome.detail)
                return "rejected"
            attempt += 1
            if time.monotonic() - payload.queued_mono >= self.policy.max_age_s:
                return "expired"
            delay = self.policy.backoff(attempt, self._rng)
            if outcome.retry_after_s is not None:
                delay = max(delay, outcome.retry_after_s)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s: %s failed (%s); retry %d in %.1f s", self.name, payload.description,
                            outcome.detail, attempt, delay)
            with self._cond:
                self._retries += 1
            if not self._wait(delay):
                return "shutdown"
