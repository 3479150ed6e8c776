"""HTTP delivery shared by the Slack and webhook channels: timeouts, Retry-After, and errors without secrets.

A channel's URL is a secret (a Slack webhook URL is a credential), so no message made here contains it: a
requests exception's text does, which is why only its type is reported.
"""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

import requests

from bot import __version__
from bot.notifiers import DeliveryError
from bot.timeutil import utcnow

USER_AGENT = f"Ringside/{__version__} (+https://github.com/ringside)"
CONNECT_TIMEOUT = 5.0
# Answers worth trying again: timeouts, rate limits, server trouble. Any other 4xx is a permanent refusal.
RETRYABLE = frozenset({408, 425, 429}) | frozenset(range(500, 600))


def json_body(document: object) -> bytes:
    """Compact UTF-8 JSON, the exact bytes that are sent (and signed)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def post(
    session: requests.Session, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> requests.Response:
    """POST `body`; network failures become DeliveryError (retry) naming the failure, never the URL."""
    try:
        return session.post(
            url,
            data=body,
            headers={"User-Agent": USER_AGENT, **headers},
            timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise DeliveryError(f"no answer within {timeout:g}s (timeout)") from None
    except requests.ConnectionError:
        raise DeliveryError("could not connect, or the connection dropped") from None
    except requests.RequestException as error:
        raise DeliveryError(f"request failed ({type(error).__name__})") from None


def check(response: requests.Response, receiver: str = "") -> None:
    """Return if the receiver accepted (2xx); otherwise raise DeliveryError, saying whether to retry.

    The receiver's own words (the body's start: Slack's `channel_not_found`) go in the message, after
    `receiver`, its name, when given."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = " ".join(response.text[:200].split())
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    prefix = f"{receiver} " if receiver else ""
    if status in RETRYABLE:
        raise DeliveryError(prefix + message, retry=True, retry_after=retry_after(response))
    raise DeliveryError(f"{prefix}refused ({message})", retry=False)


def retry_after(response: requests.Response) -> float | None:
    """Seconds the receiver asked to wait: the Retry-After header (seconds or a date), or Discord's JSON."""
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(header) - utcnow()).total_seconds())
            except (TypeError, ValueError):
                return None
    try:
        value = json.loads(response.text).get("retry_after")
        return max(0.0, float(value)) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        return None
