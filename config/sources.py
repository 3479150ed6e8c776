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
from urllib.parse import urlsplit

from config.secrets import Secret, optional_secret, required_secret
from config.table import Table


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str
    every: float
    options: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)  # by role: "token", ...
    # Its hits are press coverage (other people's feud retold), which only channels with coverage = true get.
    coverage: bool = False

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
    # The press reaches Ringside through RSS and Atom; a feed that bridges a person's own posts says false.
    coverage = table.get("coverage", "bool", kind == "rss")
    read = reader(table, environ)
    table.finish()
    return SourceConfig(
        name=name, type=kind, every=every, options=read.options, secrets=read.secrets, coverage=coverage
    )


def replay_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    options = {
        "path": table.get("path", "path"),
        "replay_seconds": table.get("replay_seconds", "duration", 0.0),
        "batch_size": table.get("batch_size", "int", 2000),
    }
    if not 1 <= options["batch_size"] <= 100_000:
        table.fail("batch_size", "expected a whole number from 1 to 100000 (posts per poll)")
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


def rss_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    """`feeds`: a list of http(s) URLs, each a string or a table {url = "...", author = "..."}; `author`
    names the author of every feed that does not name its own (default: each entry's author, else the
    feed's title)."""
    default_author = table.get("author", "str", None)
    options = {
        "first_poll_limit": table.get("first_poll_limit", "int", 20),
        "timeout": table.get("timeout", "timeout", 20.0),
    }
    table.used.add("feeds")
    listed = table.data.get("feeds")
    if not isinstance(listed, list) or not listed:
        table.fail("feeds", 'expected a list of feed URLs such as ["https://www.lemonde.fr/rss/une.xml"]')
    feeds = []
    for index, item in enumerate(listed):
        entry = Table(
            item if isinstance(item, dict) else {"url": item}, f"{table.where}.feeds[{index}]", table.file
        )
        url, author = entry.get("url", "str"), entry.get("author", "str", default_author)
        entry.finish()
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            entry.fail("url", f"expected an http:// or https:// URL with a host, got {url!r}")
        if any(f["url"] == url.strip() for f in feeds):
            entry.fail("url", f"{url!r} is listed twice")
        feeds.append({"url": url.strip(), "author": author})
    if not 1 <= options["first_poll_limit"] <= 1000:
        table.fail("first_poll_limit", "expected a whole number from 1 to 1000")
    return SourceOptions({"feeds": tuple(feeds), **options})


THREADS_OWNER = "me"  # the feed of the token owner's own posts and replies
# Threads and Instagram usernames: letters, digits, "_" and ".", at most 30.
META_HANDLE = re.compile(r"[A-Za-z0-9_.]{1,30}")
INSTAGRAM_PERMISSIONS = ("instagram_basic", "pages_read_engagement", "business_management")


def threads_permissions(feed: str, replies: bool) -> tuple[str, ...]:
    """The permissions of the Threads app's token that polling `feed` needs."""
    if feed == THREADS_OWNER:
        return ("threads_basic", "threads_read_replies") if replies else ("threads_basic",)
    return ("threads_basic", "threads_profile_discovery")


def threads_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    options = {
        "accounts": tuple(a.lower() for a in table.get("accounts", "names", (THREADS_OWNER,))),
        "replies": table.get("replies", "bool", True),
        "first_poll_limit": table.get("first_poll_limit", "int", 20),
        "timeout": table.get("timeout", "timeout", 20.0),
        "token_file": table.get("token_file", "path", None),
    }
    _check_meta_accounts(table, options, limit=100)
    options["needs"] = {
        feed: list(threads_permissions(feed, options["replies"])) for feed in options["accounts"]
    }
    token = required_secret(
        table, environ, "token_env", "THREADS_ACCESS_TOKEN", "a Threads API user access token"
    )
    return SourceOptions(options, {"token": token})


def instagram_options(table: Table, environ: Mapping[str, str]) -> SourceOptions:
    options = {
        "ig_user_id": table.get("ig_user_id", "str"),
        "accounts": tuple(a.lower() for a in table.get("accounts", "names")),
        "first_poll_limit": table.get("first_poll_limit", "int", 20),
        "timeout": table.get("timeout", "timeout", 20.0),
        "api_version": table.get("api_version", "str", "v24.0"),
    }
    if not options["ig_user_id"].isascii() or not options["ig_user_id"].isdigit():
        table.fail(
            "ig_user_id",
            f"expected the numeric id of your Instagram professional account, got {options['ig_user_id']!r}",
        )
    if not re.fullmatch(r"v\d+\.\d+", options["api_version"]):
        table.fail(
            "api_version", f"expected a Graph API version such as v24.0, got {options['api_version']!r}"
        )
    _check_meta_accounts(table, options, limit=100)
    options["needs"] = {feed: list(INSTAGRAM_PERMISSIONS) for feed in options["accounts"]}
    token = required_secret(
        table, environ, "token_env", "INSTAGRAM_ACCESS_TOKEN", "an Instagram Graph API user access token"
    )
    return SourceOptions(options, {"token": token})


def _check_meta_accounts(table: Table, options: dict[str, Any], limit: int) -> None:
    if not options["accounts"]:
        table.fail("accounts", "expected at least one account name")
    for account in options["accounts"]:
        if not META_HANDLE.fullmatch(account) or account.endswith("."):
            table.fail("accounts", f"{account!r} is not a username (1-30 letters, digits, _ or .)")
    if not 1 <= options["first_poll_limit"] <= limit:
        table.fail("first_poll_limit", f"expected a whole number from 1 to {limit}")


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
    _check_url(table, "api_url", options["api_url"], ("https", "http"))
    _check_url(table, "jetstream_url", options["jetstream_url"], ("wss", "ws"))
    handle = optional_secret(table, environ, "handle_env", "BLUESKY_HANDLE")
    password = optional_secret(table, environ, "app_password_env", "BLUESKY_APP_PASSWORD")
    if (handle is None) != (password is None):
        table.fail(
            "app_password_env", "set both BLUESKY_HANDLE and BLUESKY_APP_PASSWORD to log in, or neither"
        )
    secrets = {"handle": handle, "app_password": password} if handle and password else {}
    return SourceOptions(options, secrets)


def _check_url(table: Table, key: str, url: str, schemes: tuple[str, ...]) -> None:
    """Fail on `key` unless `url` has one of these schemes, a host and (if any) a valid port."""
    expected = f"expected a {' or '.join(f'{s}://' for s in schemes)} URL with a host"
    parts = urlsplit(url.strip())
    if parts.scheme not in schemes or not parts.hostname:
        table.fail(key, f"{expected}, got {url!r}")
    try:
        port = parts.port  # out of range or not a number raises
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535:
        table.fail(key, f"{expected} and a port from 1 to 65535, got {url!r}")


# type -> (its options reader, its default `every` in seconds)
SOURCE_OPTIONS: dict[str, tuple[OptionsReader, float]] = {
    "replay": (replay_options, 1.0),
    "x": (x_options, 300.0),
    "mastodon": (mastodon_options, 300.0),
    "rss": (rss_options, 900.0),
    "threads": (threads_options, 300.0),
    "instagram": (instagram_options, 600.0),
    "bluesky": (bluesky_options, 120.0),
}
