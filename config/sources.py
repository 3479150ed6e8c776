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

from config.secrets import Secret, required_secret
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
# user@instance: Mastodon's username characters, then a host name with at least one dot (and maybe a port).
MASTODON_ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:[0-9]{1,5})?")


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


def mastodon_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    """Accounts as `user@instance`; `tokens` maps an instance to the variable holding its access token
    (optional: public statuses need none)."""
    options = {
        "accounts": table.get("accounts", "names"),
        "first_poll_limit": table.get("first_poll_limit", "int", 20),
        "timeout": table.get("timeout", "timeout", 20.0),
    }
    if not options["accounts"]:
        table.fail("accounts", "expected at least one account such as Gargron@mastodon.social")
    for account in options["accounts"]:
        if not MASTODON_ACCOUNT.fullmatch(account):
            table.fail("accounts", f"{account!r} is not a Mastodon account such as Gargron@mastodon.social")
    if not 1 <= options["first_poll_limit"] <= 200:
        table.fail("first_poll_limit", "expected a whole number from 1 to 200")
    instances = {account.rpartition("@")[2].lower() for account in options["accounts"]}
    tokens = table.table("tokens")
    secrets = {}
    for instance in tokens.data:
        if instance.lower() not in instances:
            tokens.fail(instance, "no account in `accounts` is on this instance")
        what = f"an access token for {instance}"
        secrets[f"token:{instance.lower()}"] = required_secret(tokens, environ, instance, "", what)
    return SourceOptions(options, secrets)


# type -> (its options reader, its default `every` in seconds)
SOURCE_OPTIONS: dict[str, tuple[OptionsReader, float]] = {
    "replay": (replay_options, 1.0),
    "x": (x_options, 300.0),
    "mastodon": (mastodon_options, 300.0),
}
