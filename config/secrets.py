"""Secrets: read only from the environment (or .env), never from the settings file, and never printed."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from config.table import Table


class Secret:
    """A value that must not be printed: its repr and str are masked."""

    def __init__(self, value: str, env_name: str) -> None:
        self._value = value
        self.env_name = env_name

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(${self.env_name}=****)"

    __str__ = __repr__


def required_secret(
    table: Table, environ: Mapping[str, str], key: str, default_env: str, what: str
) -> Secret:
    env_name = table.get(key, "str", default_env)
    value = environ.get(env_name, "").strip()
    if not value:
        table.fail(
            key, f"the environment variable {env_name} is not set; expected {what} (environment or .env)"
        )
    return Secret(value, env_name)


def check_http_url(table: Table, url: Secret) -> None:
    """The URL must be http(s) with a host (never file:// or a bare path). The message shows only the
    scheme: the rest of a webhook URL is often its secret."""
    parts = urlsplit(url.reveal())
    if parts.scheme not in ("http", "https"):
        got = f"a {parts.scheme}: URL" if parts.scheme else "no scheme"
        table.fail("url_env", f"${url.env_name}: expected an http:// or https:// URL, got {got}")
    if not parts.hostname:
        table.fail("url_env", f"${url.env_name}: expected an http:// or https:// URL with a host, got none")


def optional_secret(table: Table, environ: Mapping[str, str], key: str, default_env: str) -> Secret | None:
    """The secret in the variable `key` names (default `default_env`), or None when it is not set: for
    credentials a source can do without (a public API read anonymously, with lower limits)."""
    env_name = table.get(key, "str", default_env)
    value = environ.get(env_name, "").strip()
    return Secret(value, env_name) if value else None
