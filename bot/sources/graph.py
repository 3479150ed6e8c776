"""What Threads and Instagram share: Meta's Graph API, read with `requests` (Meta ships no maintained SDK).

One GET with a timeout, and Graph's failures turned into the project's two source errors: a rate limit
(`RateLimited`, until the time Meta's usage headers give, else a default pause) and anything else
(`SourceError`, naming the permission a refusal needs). No message ever holds the token or a URL (Graph's
paging URLs carry the token).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import requests

from bot.sources import LONGEST_PAUSE, RateLimited, SourceError
from bot.timeutil import iso, utcnow

# Graph's throttling codes: 4 app, 17 user, 32 page, 613 call rate; 80001-80014 business use case limits.
RATE_LIMIT_CODES = {4, 17, 32, 613, *range(80001, 80015)}
EXPIRED_TOKEN = 190
PERMISSION_CODES = {10, *range(200, 300)}
# Meta's windows roll over an hour; when no header says when access comes back, try again after a quarter.
DEFAULT_PAUSE = timedelta(minutes=15)
USAGE_HEADERS = ("X-Business-Use-Case-Usage", "X-App-Usage", "X-Ad-Account-Usage")
MENTION = re.compile(r"(?<![\w.])@([A-Za-z0-9_.]{1,30})(?<!\.)")


class GraphRefusal(SourceError):
    """Graph refused the call; `code` is its error code (0 when the answer had none)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class GraphClient:
    """GETs on one Graph API host with one token; answers are JSON objects or source errors."""

    def __init__(
        self, base_url: str, platform: str, token_env: str, timeout: float, session: requests.Session | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.platform = platform  # "Threads" or "Instagram", for messages
        self.token_env = token_env
        self.timeout = timeout
        self.session = session or requests.Session()

    def get(self, path: str, params: dict[str, Any], token: str, needs: str) -> dict[str, Any]:
        """The JSON object Graph answers to GET `path` (under the versioned base URL, or a whole https URL).
        `needs` names the permissions the call needs, for the message when Graph refuses it for want of it."""
        try:
            url = path if path.startswith("https://") else f"{self.base_url}/{path.lstrip('/')}"
            response = self.session.get(
                url,
                params={**params, "access_token": token},
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            raise SourceError(f"cannot reach {self.platform}: {type(error).__name__}") from None
        body = _json_object(response)
        if response.status_code == 200 and body is not None and "error" not in body:
            return body
        raise self._failure(response, body, needs)

    def _failure(self, response: requests.Response, body: dict[str, Any] | None, needs: str) -> SourceError:
        error = (body or {}).get("error")
        error = error if isinstance(error, dict) else {}
        code = _int(error.get("code"))
        message = str(error.get("message") or response.reason or "no detail")[:300]
        status = response.status_code
        if status == 429 or code in RATE_LIMIT_CODES:
            reset_at = regain_access_time(response.headers)
            return RateLimited(
                f"{self.platform} rate limit reached ({status}, code {code}); paused until {iso(reset_at)}",
                reset_at,
                whole_source=True,  # Meta counts per app, token and account: every feed of the source waits
            )
        if code == EXPIRED_TOKEN:
            return GraphRefusal(
                f"{self.platform} refused the access token (code 190: {message}); "
                f"get a new token and set {self.token_env}",
                code,
            )
        if code in PERMISSION_CODES:
            return GraphRefusal(
                f"{self.platform} refused for want of a permission (code {code}: {message}); "
                f"this feed needs {needs}",
                code,
            )
        if status >= 500:
            return SourceError(f"{self.platform} server error ({status}); retrying next poll")
        if body is None:
            return SourceError(f"{self.platform} answered {status} with a body that is not a JSON object")
        return GraphRefusal(f"{self.platform} answered {status}: {message} (code {code})", code)


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def regain_access_time(headers: Any) -> datetime:
    """When Meta says access comes back: the longest `estimated_time_to_regain_access` (minutes) in its usage
    headers, else DEFAULT_PAUSE from now."""
    minutes = [m for name in USAGE_HEADERS for m in _regain_minutes(headers.get(name))]
    longest = min(max(minutes, default=0), LONGEST_PAUSE.total_seconds() / 60)  # a huge one overflows
    return utcnow() + (timedelta(minutes=longest) if longest > 0 else DEFAULT_PAUSE)


def _regain_minutes(header: str | None) -> list[int]:
    """Every estimated_time_to_regain_access in one usage header, wherever it sits in its JSON."""
    if not header:
        return []
    try:
        document = json.loads(header)
    except ValueError:
        return []
    found: list[int] = []
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.extend(
                item[k] for k in item if k == "estimated_time_to_regain_access" and _int(item[k]) > 0
            )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def mentions_in(text: str) -> tuple[str, ...]:
    """The @handles written in `text`, in order, each once (Threads and Instagram handles: letters, digits,
    `_` and `.`, not ending with a dot)."""
    return tuple(dict.fromkeys(match.lower() for match in MENTION.findall(text)))


def paging_after(page: dict[str, Any], needs_next: bool = True) -> str | None:
    """The `after` cursor of a Graph page, when there is a next page: Graph says so with `paging.next`,
    except inside a field expansion (business_discovery's media), whose paging has only cursors."""
    paging = page.get("paging")
    if not isinstance(paging, dict) or (needs_next and not paging.get("next")):
        return None
    after = (paging.get("cursors") or {}).get("after")
    return after if isinstance(after, str) and after else None
