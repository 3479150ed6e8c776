"""The [[sources]] tables: one options reader per source type, found by type in SOURCE_OPTIONS.

A reader takes the table (and the environment, for secrets) and returns the source's options, its secrets and
how often it polls by default; every problem is a ConfigError naming the file, the key and what was expected.
A new platform adds one reader here and one file under bot/sources/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from config.secrets import Secret, optional_secret, required_secret
from config.table import Table


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str
    every: float
    options: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)  # by role: "token", ...

    @property
    def secret(self) -> Secret | None:
        """The source's token, for sources that have one."""
        return self.secrets.get("token")


@dataclass(frozen=True)
class SourceOptions:
    options: dict[str, Any]
    secrets: dict[str, Secret] = field(default_factory=dict)


OptionsReader = Callable[[Table, Mapping[str, str]], SourceOptions]

# X's own rule for a handle; anything else would end up as operators inside the batch search query.
X_HANDLE = re.compile(r"[A-Za-z0-9_]{1,15}")
# A Bluesky handle is a domain name (alice.bsky.social, example.com): labels of letters, digits and hyphens.
BLUESKY_HANDLE = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
)
BLUESKY_MODES = ("poll", "jetstream")
JETSTREAM_MAX_ACCOUNTS = 100  # their DIDs go in the subscribe URL (about 5 KB); servers cap a request line


def source_from_table(table: Table, environ: Mapping[str, str]) -> SourceConfig:
    kind = table.get("type", "str")
    if kind not in SOURCE_OPTIONS:
        table.fail("type", f"unknown source type {kind!r}; expected one of: {', '.join(SOURCE_OPTIONS)}")
    name = table.get("name", "str", kind)
    reader, default_every = SOURCE_OPTIONS[kind]
    every = table.get("every", "interval", default_every)
    read = reader(table, environ)
    table.finish()
    return SourceConfig(name=name, type=kind, every=every, options=read.options, secrets=read.secrets)


def replay_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    options = {
        "path": table.get("path", "path"),
        "replay_seconds": table.get("replay_seconds", "duration", 0.0),
    }
    if not options["path"].is_file():
        table.fail("path", f"replay file {options['path']} not found")
    return SourceOptions(options)


def x_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    options = {
        "accounts": table.get("accounts", "names"),
        "first_poll_limit": table.get("first_poll_limit", "int", 20),
        "batch": table.get("batch", "bool", False),
        "timeout": table.get("timeout", "timeout", 20.0),
    }
    if not options["accounts"]:
        table.fail("accounts", "expected at least one account name")
    for account in options["accounts"]:
        if not X_HANDLE.fullmatch(account):
            table.fail("accounts", f"{account!r} is not an X handle (1-15 letters, digits or _)")
    if not 1 <= options["first_poll_limit"] <= 3200:
        table.fail("first_poll_limit", "expected a whole number from 1 to 3200")
    token = required_secret(table, environ, "token_env", "X_BEARER_TOKEN", "an X API bearer token")
    return SourceOptions(options, {"token": token})


def bluesky_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    options = {
        "accounts": [a.lower().lstrip("@") for a in table.get("accounts", "names")],
        "mode": table.get("mode", "str", "poll"),
        "first_poll_limit": table.get("first_poll_limit", "int", 20),
        "api_url": table.get("api_url", "str", "https://public.api.bsky.app"),
        "jetstream_url": table.get("jetstream_url", "str", "wss://jetstream2.us-east.bsky.network/subscribe"),
        "timeout": table.get("timeout", "timeout", 20.0),
    }
    if not options["accounts"]:
        table.fail("accounts", "expected at least one Bluesky handle such as alice.bsky.social")
    for account in options["accounts"]:
        if not BLUESKY_HANDLE.fullmatch(account):
            table.fail(
                "accounts", f"{account!r} is not a Bluesky handle (a domain name such as alice.bsky.social)"
            )
    if options["mode"] not in BLUESKY_MODES:
        table.fail("mode", f"expected one of: {', '.join(BLUESKY_MODES)}; got {options['mode']!r}")
    if options["mode"] == "jetstream" and len(options["accounts"]) > JETSTREAM_MAX_ACCOUNTS:
        table.fail("accounts", f"jetstream mode takes at most {JETSTREAM_MAX_ACCOUNTS} accounts a source")
    if not 1 <= options["first_poll_limit"] <= 100:
        table.fail("first_poll_limit", "expected a whole number from 1 to 100")
    if not options["api_url"].startswith(("https://", "http://")):
        table.fail("api_url", "expected an http:// or https:// URL")
    if not options["jetstream_url"].startswith(("wss://", "ws://")):
        table.fail("jetstream_url", "expected a wss:// or ws:// URL")
    handle = optional_secret(table, environ, "handle_env", "BLUESKY_HANDLE")
    password = optional_secret(table, environ, "app_password_env", "BLUESKY_APP_PASSWORD")
    if (handle is None) != (password is None):
        table.fail(
            "app_password_env", "set both BLUESKY_HANDLE and BLUESKY_APP_PASSWORD to log in, or neither"
        )
    secrets = {"handle": handle, "app_password": password} if handle and password else {}
    return SourceOptions(options, secrets)


# type -> (its options reader, its default `every` in seconds)
SOURCE_OPTIONS: dict[str, tuple[OptionsReader, float]] = {
    "replay": (replay_options, 1.0),
    "x": (x_options, 300.0),
    "bluesky": (bluesky_options, 120.0),
}
