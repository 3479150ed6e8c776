"""Secrets out of text: every spelling of a configured secret becomes ****.

A webhook URL is a secret, and it reaches text in more spellings than the one configured: urllib3 writes it
with the default port added (`https://hooks.slack.com:443/services/...`), a receiver echoes the request path
alone (`/services/...`) or as JSON writes it (`\\/services\\/...`), a proxy or a log percent-encodes it. Each
of these is redacted, not only the one configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from requests.utils import requote_uri

MASK = "****"
SHORTEST = 4  # a shorter value would mask ordinary words; no real secret is this short
SHORTEST_PART = 8  # a URL's path or query alone: "/hook" is a route, "/services/T0/B0/x" is the secret
TOKEN_PART = 16  # a path segment or query value this long is a token on its own (Discord's, Slack's)
DEFAULT_PORTS = {"http": 80, "https": 443}


class Redactor:
    """Replaces every form of the given secrets (see `secret_forms`) with ****, ignoring case."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets for form in secret_forms(secret)}
        ordered = sorted(forms, key=len, reverse=True)  # the longest spelling first, so none is half-masked
        self._pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


def secret_forms(secret: str) -> set[str]:
    """The spellings of `secret` that may appear in logs or replies: itself, percent-encoded and decoded,
    and for a URL also with and without its default port, as requests sends it, its path and query alone,
    and each long path segment or query value."""
    if len(secret) < SHORTEST:
        return set()
    forms = {secret, unquote(secret), requote_uri(secret)}
    parts = urlsplit(secret)
    if parts.scheme and parts.netloc:
        forms |= _url_forms(secret)
    forms |= {quote(form, safe="") for form in list(forms)} | {quote(form) for form in list(forms)}
    forms |= {form.replace("/", "\\/") for form in list(forms) if "/" in form}  # as JSON may write it
    return {form for form in forms if len(form) >= SHORTEST}


def _url_forms(url: str) -> set[str]:
    parts = urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    forms = {url, _with_default_port(url), _without_default_port(url), requote_uri(tail)}
    forms |= {part for part in (tail, parts.path, parts.query) if len(part) >= SHORTEST_PART}
    if parts.password and len(parts.password) >= SHORTEST:
        forms.add(parts.password)
    pieces = parts.path.split("/") + re.split(r"[&=]", parts.query)
    forms |= {piece for piece in pieces if len(piece) >= TOKEN_PART}
    # A webhook URL ends in its token (Discord's, a self-hosted hook's), however short the rest of it is.
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if len(last) >= SHORTEST_PART:
        forms.add(last)
    return {form for form in forms if form}


def _with_default_port(url: str) -> str:
    parts = urlsplit(url)
    port = DEFAULT_PORTS.get(parts.scheme.lower())
    if port is None or _explicit_port(url) is not None or ":" in parts.netloc.rsplit("@", 1)[-1]:
        return url
    return parts._replace(netloc=f"{parts.netloc}:{port}").geturl()


def _without_default_port(url: str) -> str:
    parts = urlsplit(url)
    explicit = _explicit_port(url)
    if explicit is None or DEFAULT_PORTS.get(parts.scheme.lower()) != explicit:
        return url
    return parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()


def _explicit_port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:  # not a number: there is no port to add or drop
        return None
