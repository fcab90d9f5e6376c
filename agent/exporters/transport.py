"""HTTP transport for the network exporters: auth, TLS, timeouts, and what a response means.

In: a ``RemoteConfig`` and a ``Payload``. Out: an ``Outcome`` for the delivery queue.
Retried: connection errors, timeouts, 5xx, 408 and 429 (with ``Retry-After`` in seconds or an
HTTP date). Not retried: every other 4xx, and a TLS certificate that does not verify (TLS is
verified by default against the system store or ``ca_file``; nothing downgrades it).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import requests

from agent.config import RemoteConfig
from agent.delivery import Outcome, Payload

__all__ = ["HttpTransport", "parse_retry_after"]

RETRIED_STATUS = frozenset({408, 429})
USER_AGENT = "hostflame/0.1"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpTransport:
    """POSTs payloads to one URL with the configured auth and TLS settings (one per sender thread)."""

    def __init__(self, remote: RemoteConfig, url: str, content_type: str,
                 extra_headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.timeout_s = remote.timeout_s
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc from the environment: the config says it all
        self.session.verify = remote.ca_file or True
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT, **(extra_headers or {})}
        if remote.tenant_id:
            headers["X-Scope-OrgID"] = remote.tenant_id
        if remote.bearer_token:
            headers["Authorization"] = f"Bearer {remote.bearer_token}"
        elif remote.basic_auth_user:
            self.session.auth = (remote.basic_auth_user, remote.basic_auth_password)
        headers.update(dict(remote.headers))
        self.session.headers.update(headers)

    def post(self, payload: Payload) -> Outcome:
        try:
            response = self.session.post(self.url, data=payload.body, params=list(payload.params) or None,
                                         timeout=self.timeout_s)
        except requests.exceptions.SSLError as exc:
            return Outcome(ok=False, retry=False, detail=f"TLS: {_reason(exc)}")
        except requests.exceptions.Timeout:
            return Outcome(ok=False, retry=True, detail=f"no answer within {self.timeout_s:g} s")
        except requests.exceptions.ConnectionError as exc:
            return Outcome(ok=False, retry=True, detail=f"connection: {_reason(exc)}")
        except requests.exceptions.RequestException as exc:
            return Outcome(ok=False, retry=False, detail=_reason(exc))
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(ok=True)
        text = response.text[:200].strip().replace("\n", " ")
        detail = f"HTTP {status}{': ' + text if text else ''}"
        if status >= 500 or status in RETRIED_STATUS:
            return Outcome(ok=False, retry=True, retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
                           detail=detail)
        return Outcome(ok=False, retry=False, detail=detail)

    def close(self) -> None:
        self.session.close()


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 240 else text[:240] + "..."
