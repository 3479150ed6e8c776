"""HTTP delivery shared by the Slack and webhook channels: deadlines, bounded replies, Retry-After, and
errors without secrets.

A channel's URL is a secret (a Slack webhook URL is a credential), so no message made here contains it: a
requests exception's text does, which is why only its type is reported, and a receiver's own words (which
may echo the request path) pass through the channel's redactor.

Every request ends within its channel's `timeout`, whatever the receiver does: a receiver that drip-feeds
its answer a byte at a time never trips a per-read timeout, so a timer cuts the connection at the deadline.
Of any answer, at most REPLY_LIMIT bytes are read.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from bot import __version__
from bot.notifiers import DeliveryError
from bot.terminal import printable
from bot.timeutil import utcnow

USER_AGENT = f"Ringside/{__version__} (+https://github.com/ringside)"
CONNECT_TIMEOUT = 5.0
REPLY_LIMIT = 64 * 1024  # bytes read of any answer: enough for every error message, never a 3 GiB body
DETAIL_LIMIT = 200  # characters of the receiver's answer quoted in an error
# Answers worth trying again: timeouts, rate limits, server trouble. Any other 4xx is a permanent refusal.
RETRYABLE = frozenset({408, 425, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class Reply:
    """What a receiver answered: its status, headers, and at most REPLY_LIMIT bytes of its body."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def session() -> requests.Session:
    """A requests session whose connections can be cut at a request's deadline (see `post`)."""
    made = requests.Session()
    adapter = _DeadlineAdapter()
    made.mount("http://", adapter)
    made.mount("https://", adapter)
    return made


def json_body(document: object) -> bytes:
    """Compact UTF-8 JSON, the exact bytes that are sent (and signed)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def post(session: requests.Session, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
    """POST `body` and read the answer, all within `timeout` seconds (connecting, sending and reading),
    reading at most REPLY_LIMIT bytes of it. Network failures and the deadline become DeliveryError (retry)
    naming the failure, never the URL."""
    deadline = Deadline(timeout)
    try:
        with deadline:
            reply = _exchange(session, url, body, headers, timeout)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        if deadline.expired or isinstance(error, requests.Timeout | urllib3.exceptions.TimeoutError):
            raise DeliveryError(f"no answer within {timeout:g}s (timeout)") from None
        if isinstance(error, requests.ConnectionError | urllib3.exceptions.ProtocolError | OSError):
            raise DeliveryError("could not connect, or the connection dropped") from None
        raise DeliveryError(f"request failed ({type(error).__name__})") from None
    if deadline.expired:  # cut off mid-answer: what arrived may be a status line without its headers
        raise DeliveryError(f"no answer within {timeout:g}s (timeout)")
    return reply


def _exchange(
    session: requests.Session, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> Reply:
    response = session.post(
        url,
        data=body,
        # identity: the REPLY_LIMIT bytes read are the answer itself, never a compressed bomb
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
        allow_redirects=False,
        stream=True,
    )
    try:
        return Reply(response.status_code, response.headers, _read_some(response))
    finally:
        response.close()  # a body left unread closes the connection rather than draining it


def _read_some(response: requests.Response) -> bytes:
    """Up to REPLY_LIMIT bytes of the body. Once a receiver said 2xx it took the alert, so a body that
    breaks off after that does not undo it."""
    try:
        return response.raw.read(REPLY_LIMIT, decode_content=False)
    except (urllib3.exceptions.HTTPError, OSError):
        if 200 <= response.status_code < 300:
            return b""
        raise


def check(reply: Reply, receiver: str = "", redact: Callable[[str], str] = str) -> None:
    """Return if the receiver accepted (2xx); otherwise raise DeliveryError, saying whether to retry.

    The receiver's own words (the body's start: Slack's `channel_not_found`) go in the message, after
    `receiver`, its name, when given, and through `redact`: a receiver may echo the secret request path."""
    status = reply.status_code
    if 200 <= status < 300:
        return
    # Redacted whole, then cut: a cut first could leave half a secret that no longer matches.
    # printable: the receiver's words reach the operator's terminal through the log.
    detail = printable(redact(" ".join(reply.text.split())))[:DETAIL_LIMIT]
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    prefix = f"{receiver} " if receiver else ""
    if status in RETRYABLE:
        raise DeliveryError(prefix + message, retry=True, retry_after=retry_after(reply))
    raise DeliveryError(f"{prefix}refused ({message})", retry=False)


def retry_after(reply: Reply) -> float | None:
    """Seconds the receiver asked to wait: the Retry-After header (seconds or a date), or Discord's JSON.

    Nonsense (not a number or date, negative, infinite) counts as no answer; the courier caps the rest at
    delivery.retry_max."""
    header = reply.headers.get("Retry-After")
    if header:
        return _seconds(header) if _seconds(header) is not None else _until(header)
    try:
        value = json.loads(reply.text).get("retry_after")
    except (ValueError, AttributeError):
        return None
    return _seconds(value)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _until(date: str) -> float | None:
    try:
        return max(0.0, (parsedate_to_datetime(date) - utcnow()).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return None


# -- the deadline -----------------------------------------------------------------------------------------

_current = threading.local()  # the deadline of the request this thread is making, if any


class Deadline:
    """Within `with`, connections this thread uses are shut down once `seconds` have passed: a blocked read
    then ends at once, where a per-read timeout would wait for as long as bytes keep trickling in."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _current.deadline = None

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _cut(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                _cut(connection)


def _cut(connection: HTTPConnection) -> None:
    # An answer with no length (read until the connection closes) takes the socket away from the connection
    # (http.client sets connection.sock to None): the one kept at connect time is still the one to cut.
    sock = connection.sock or getattr(connection, "deadline_sock", None)
    if sock is not None:
        # The plain socket's shutdown, also under TLS: it wakes the reading thread without touching the
        # TLS state that thread is using.
        with suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedMixin:
    """A connection that puts itself under the current thread's deadline whenever it connects or sends."""

    def connect(self) -> None:
        _watch(self)
        super().connect()  # type: ignore[misc]
        self.deadline_sock = self.sock  # type: ignore[attr-defined]
        _watch(self)  # a deadline that passed while connecting cuts the new socket at once

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


def _watch(connection: Any) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


class _HTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _HTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Through an HTTP(S)_PROXY too; a SOCKS proxy keeps its own pools (and only per-read timeouts)."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager
