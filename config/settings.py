"""Load and validate settings. Every error names the file, the key and what was expected.

Secrets (tokens, webhook URLs, signing secrets) are never read from the settings file: the file names an
environment variable, and the value comes from the environment or a .env file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.detect.scanners import ENGINES
from config.routes import Route, route_from_table
from config.secrets import Secret, check_http_url, required_secret
from config.sources import SourceConfig, source_from_table
from config.table import ConfigError, Table
from config.watches import Watch, watches_from_tables

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "ringside.toml"
DEFAULT_RULES = CONFIG_DIR / "rules"
DEFAULT_MODEL = CONFIG_DIR / "model" / "scorer.json"

CHANNEL_TYPES = ("console", "slack", "webhook", "apprise", "slack_app")
# HMAC-SHA256 is only as strong as its key: 16 bytes is 128 bits when random, the least to trust for signing.
MIN_SIGNING_SECRET = 16


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)  # "url", "signing"
    route: Route = field(default_factory=Route)  # which alerts the channel wants (bot.routing)

    @property
    def digest(self) -> float:
        """Seconds between digest messages; 0 sends each alert on its own."""
        return float(self.options.get("digest", 0.0))


@dataclass(frozen=True)
class Delivery:
    max_attempts: int = 8
    max_age: float = 86400.0
    retry_base: float = 15.0
    retry_max: float = 3600.0
    throttle: float = 0.0


@dataclass(frozen=True)
class Service:
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0: no /healthz and /metrics
    heartbeat_every: float = 10.0
    watchdog_after: int = 3  # intervals without a successful poll before a feed is reported; 0: off
    shutdown_grace: float = 8.0
    watch_files: bool = True  # reload when the settings, .env or a rule file changes (SIGHUP always does)


@dataclass(frozen=True)
class XSpend:
    """What X charges and how much the operator lets it charge: US dollars (the `[x]` table)."""

    price_per_post: float = 0.005  # X's pay-per-use price of one post read (2026)
    budget_per_day: float | None = None  # per UTC day; None: no limit
    budget_per_month: float | None = None  # per UTC calendar month; None: no limit


@dataclass(frozen=True)
class Person:
    """Someone tracked across platforms: accounts are "platform:handle", lower case."""

    id: str
    name: str
    accounts: frozenset[str]


@dataclass(frozen=True)
class Exchanges:
    people: tuple[Person, ...] = ()
    rivalries: tuple[frozenset[str], ...] = ()  # groups of person ids
    window: float = 72 * 3600.0  # an answer links to a rival's hit at most this long after it
    cool_after: float = 7 * 86400.0  # an exchange with no new turn for this long has cooled

    def person_of(self, platform: str, handle: str) -> Person | None:
        account = f"{platform}:{handle}".lower()
        return next((p for p in self.people if account in p.accounts), None)

    def rivals_of(self, person_id: str) -> set[str]:
        return {other for group in self.rivalries if person_id in group for other in group} - {person_id}


@dataclass(frozen=True)
class DetectorSettings:
    """The learned scorer beside the rules: which model file, and the probability that makes a post alert."""

    model: Path | None = DEFAULT_MODEL  # None: rules alone
    threshold: float | None = None  # None: the threshold the model was trained with (cross-validated)
    # How much of one post the rules read (bot.detect.matcher's MAX_TEXT and MAX_POSITIONS).
    max_text: int = 50_000  # characters matched; above X's 25,000
    max_positions: int = 1_000  # occurrences of one term that count


@dataclass(frozen=True)
class Settings:
    path: Path
    database: Path
    rules: Path
    engine: str
    deliver_every: float
    jitter: float
    misfire_grace: float
    delivery: Delivery
    service: Service
    exchanges: Exchanges
    sources: tuple[SourceConfig, ...]
    channels: tuple[ChannelConfig, ...]
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    x_spend: XSpend = field(default_factory=XSpend)
    watches: tuple[Watch, ...] = ()  # frequency, spike and silence rules (config.watches)
    watch_every: float = 60.0  # seconds between two evaluations of the watches by the service

    def secrets(self) -> list[Secret]:
        """Every secret these settings hold, so logs can be scrubbed of them."""
        parts = [*self.sources, *self.channels]
        return [secret for part in parts for secret in part.secrets.values()]

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets shown only as the variable that holds them."""
        return {
            "config": str(self.path),
            "storage": {"path": str(self.database)},
            "matcher": {"rules": str(self.rules), "engine": self.engine},
            "detector": {
                "model": str(self.detector.model) if self.detector.model else "off",
                "threshold": "auto" if self.detector.threshold is None else self.detector.threshold,
                "max_text": self.detector.max_text,
                "max_positions": self.detector.max_positions,
            },
            "schedule": {
                "deliver_every": self.deliver_every,
                "jitter": self.jitter,
                "misfire_grace": self.misfire_grace,
                "watch_every": self.watch_every,
            },
            "delivery": vars(self.delivery),
            "service": vars(self.service),
            "x": vars(self.x_spend),
            "exchanges": {
                "window": self.exchanges.window,
                "cool_after": self.exchanges.cool_after,
                "people": [
                    {"id": p.id, "name": p.name, "accounts": sorted(p.accounts)}
                    for p in self.exchanges.people
                ],
                "rivalries": [sorted(group) for group in self.exchanges.rivalries],
            },
            "watches": [_masked_watch(w) for w in self.watches],
            "sources": [_masked_part(s, every=s.every) for s in self.sources],
            "channels": [_masked_part(c, **c.route.shown()) for c in self.channels],
        }


def _masked_watch(watch: Watch) -> dict[str, Any]:
    """A watch as written in the file: the keys of its type only."""
    keys = {
        "frequency": ("people", "count", "hours"),
        "spike": ("category", "hours", "ratio", "baseline_days", "min_hits"),
        "silence": ("people", "account", "days"),
    }[watch.type]
    shown = {key: getattr(watch, key) for key in keys if getattr(watch, key) not in (None, ())}
    common = {"name": watch.name, "type": watch.type, "severity": watch.severity, "throttle": watch.throttle}
    return common | {key: list(value) if isinstance(value, tuple) else value for key, value in shown.items()}


def _masked_part(part: SourceConfig | ChannelConfig, **extra: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {"name": part.name, "type": part.type, **extra}
    shown.update({k: str(v) if isinstance(v, Path) else v for k, v in part.options.items()})
    for key, secret in part.secrets.items():
        shown[key] = f"${secret.env_name} (set, ****)"
    return shown


def load_settings(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings file at `path` (default: config/ringside.toml).

    `environ` supplies secrets and overrides (default: os.environ, after loading .env from the working
    directory without overriding what the environment already has). RINGSIDE_CONFIG names the settings
    file when `path` is None; RINGSIDE_DB overrides storage.path.
    """
    if environ is None:
        _load_dotenv()
        environ = os.environ
    if path is None:
        path = environ.get("RINGSIDE_CONFIG") or DEFAULT_CONFIG
    file = Path(path)
    top = Table(_read_toml(file), "", file)
    storage, schedule, matcher = top.table("storage"), top.table("schedule"), top.table("matcher")
    delivery, service, exchange_table = top.table("delivery"), top.table("service"), top.table("exchanges")
    detector, x_table = top.table("detector"), top.table("x")
    database = storage.get("path", "path", Path("data/ringside.db"))
    if environ.get("RINGSIDE_DB"):
        database = Path(environ["RINGSIDE_DB"])
    exchanges = _exchanges(exchange_table, top.tables("people"), top.tables("rivalries"))
    sources = _unique("sources", [source_from_table(t, environ) for t in top.tables("sources")], file)
    # A channel's filters name people and sources: both are read first.
    known = ([p.id for p in exchanges.people], [s.name for s in sources])
    settings = Settings(
        path=file,
        database=database,
        rules=matcher.get("rules", "path", DEFAULT_RULES),
        engine=_engine(matcher),
        deliver_every=schedule.get("deliver_every", "interval", 10.0),
        jitter=schedule.get("jitter", "duration", 2.0),
        misfire_grace=schedule.get("misfire_grace", "duration", 60.0),
        delivery=_delivery(delivery),
        service=_service(service, environ),
        exchanges=exchanges,
        sources=sources,
        channels=_unique("channels", [_channel(t, environ, *known) for t in top.tables("channels")], file),
        detector=_detector(detector),
        x_spend=_x_spend(x_table),
        watches=watches_from_tables(top.tables("watches"), {p.id for p in exchanges.people}),
        watch_every=schedule.get("watch_every", "interval", 60.0),
    )
    for table in (storage, schedule, matcher, delivery, service, exchange_table, detector, x_table, top):
        table.finish()
    if not settings.sources:
        raise ConfigError(f"{file}: sources: no source configured; add a [[sources]] table")
    return settings


def environ_for_reload(started_with: Mapping[str, str]) -> dict[str, str]:
    """The environment a reload reads: .env as it is on disk now, under the variables the process was
    started with, which win as they did at start (a process cannot see its parent's environment change)."""
    from dotenv import dotenv_values

    on_disk = dotenv_values(Path.cwd() / ".env")
    return {**{key: value for key, value in on_disk.items() if value is not None}, **started_with}


def _load_dotenv() -> None:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{file}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: not UTF-8 text: byte {error.start} cannot be decoded") from None
    except OSError as error:
        raise ConfigError(f"{file}: cannot read: {error.strerror}") from None


def _unique(what: str, parts: list[Any], file: Path) -> tuple[Any, ...]:
    seen: set[str] = set()
    for index, part in enumerate(parts):
        if part.name in seen:
            raise ConfigError(
                f"{file}: {what}[{index}].name: {part.name!r} is used twice; names must be unique"
            )
        seen.add(part.name)
    return tuple(parts)


def _detector(table: Table) -> DetectorSettings:
    model = table.get("model", "str", str(DEFAULT_MODEL))
    threshold = table.data.get("threshold", "auto")
    table.used.add("threshold")
    if threshold == "auto":
        threshold = None
    elif isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        table.fail("threshold", f'expected "auto" or a probability between 0 and 1, got {threshold!r}')
    limits = {
        key: table.get(key, "int", getattr(DetectorSettings, key)) for key in ("max_text", "max_positions")
    }
    for key, value in limits.items():
        if value < 1:
            table.fail(key, f"expected a whole number above zero, got {value}")
    return DetectorSettings(None if model == "off" else Path(model), threshold, **limits)


def _x_spend(table: Table) -> XSpend:
    """The [x] table: price_per_post, budget_per_day and budget_per_month, each in dollars above zero."""
    return XSpend(
        price_per_post=_dollars(table, "price_per_post", XSpend.price_per_post),
        budget_per_day=_dollars(table, "budget_per_day", None),
        budget_per_month=_dollars(table, "budget_per_month", None),
    )


def _dollars(table: Table, key: str, default: float | None) -> float | None:
    table.used.add(key)
    value = table.data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        table.fail(key, f"expected an amount of US dollars above zero such as 0.005 or 20, got {value!r}")
    return float(value)


def _engine(table: Table) -> str:
    engine = table.get("engine", "str", "pyahocorasick")
    if engine not in ENGINES:
        table.fail("engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "hyperscan":
        try:
            import hyperscan  # noqa: F401
        except ImportError:
            table.fail(
                "engine", "hyperscan is not installed: pip install 'ringside[hyperscan]' (x86-64 only)"
            )
    return engine


def _delivery(table: Table) -> Delivery:
    delivery = Delivery(
        max_attempts=table.get("max_attempts", "int", 8),
        max_age=table.get("max_age", "interval", 86400.0),
        retry_base=table.get("retry_base", "interval", 15.0),
        retry_max=table.get("retry_max", "interval", 3600.0),
        throttle=table.get("throttle", "duration", 0.0),
    )
    if delivery.max_attempts < 1:
        table.fail("max_attempts", "expected a whole number of at least 1")
    return delivery


def _exchanges(table: Table, people_tables: list[Table], rivalry_tables: list[Table]) -> Exchanges:
    people = []
    for person in people_tables:
        person_id = person.get("id", "str")
        accounts = person.get("accounts", "names")
        for account in accounts:
            if ":" not in account:
                person.fail("accounts", f"{account!r}: expected platform:handle, such as x:elonmusk")
        people.append(
            Person(
                person_id,
                person.get("name", "str", person_id),
                frozenset(a.lower().replace("@", "") for a in accounts),
            )
        )
        person.finish()
    known = {p.id for p in people}
    if len(known) < len(people):
        raise ConfigError(f"{people_tables[0].file}: people: two people share an id")
    rivalries = []
    for rivalry in rivalry_tables:
        group = rivalry.get("people", "names")
        unknown = [p for p in group if p not in known]
        if unknown:
            rivalry.fail("people", f"{unknown[0]!r} is not the id of a [[people]] table")
        if len(set(group)) < 2:
            rivalry.fail("people", "a rivalry needs at least two people")
        rivalries.append(frozenset(group))
        rivalry.finish()
    return Exchanges(
        people=tuple(people),
        rivalries=tuple(rivalries),
        window=table.get("window", "interval", 72 * 3600.0),
        cool_after=table.get("cool_after", "interval", 7 * 86400.0),
    )


def _service(table: Table, environ: Mapping[str, str]) -> Service:
    port = table.get("http_port", "int", 0)
    if environ.get("RINGSIDE_HTTP_PORT"):
        try:
            port = int(environ["RINGSIDE_HTTP_PORT"])
        except ValueError:
            raise ConfigError(
                f"RINGSIDE_HTTP_PORT: expected a port number, got {environ['RINGSIDE_HTTP_PORT']!r}"
            ) from None
    if not 0 <= port <= 65535:
        table.fail("http_port", "expected a port from 1 to 65535, or 0 for none")
    service = Service(
        http_host=environ.get("RINGSIDE_HTTP_HOST") or table.get("http_host", "str", "127.0.0.1"),
        http_port=port,
        heartbeat_every=table.get("heartbeat_every", "interval", 10.0),
        watchdog_after=table.get("watchdog_after", "int", 3),
        shutdown_grace=table.get("shutdown_grace", "duration", 8.0),
        watch_files=table.get("watch_files", "bool", True),
    )
    table.get("http_host", "str", "")  # mark as known even when the environment set it
    return service


# Per channel type: the environment variables it reads secrets from, by default.
_CHANNEL_SECRETS = {
    "console": {},
    "slack": {"url": ("url_env", "SLACK_WEBHOOK_URL", "a Slack incoming-webhook URL")},
    "webhook": {
        "url": ("url_env", "RINGSIDE_WEBHOOK_URL", "the URL to POST alerts to"),
        "signing": ("secret_env", "RINGSIDE_WEBHOOK_SECRET", "the secret that signs each request"),
    },
    "apprise": {"url": ("url_env", "APPRISE_URL", "an Apprise URL such as discord://... or ntfy://...")},
    "slack_app": {
        "bot": ("bot_token_env", "SLACK_BOT_TOKEN", "the Slack app's bot token (xoxb-...)"),
        "app": ("app_token_env", "SLACK_APP_TOKEN", "the Slack app's app-level token (xapp-...)"),
    },
}
# A Slack app's tokens by what they start with: a token of the other kind fails only later, less clearly.
_TOKEN_PREFIXES = {"bot": ("bot_token_env", "xoxb-"), "app": ("app_token_env", "xapp-")}
SLACK_API_URL = "https://slack.com/api/"
# A conversation's id (C0123ABCD, G... private, D... direct) or a name, with or without its #.
_SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,}|#?[a-z0-9][a-z0-9_-]{0,79}")


def _channel(
    table: Table, environ: Mapping[str, str], people: list[str], sources: list[str]
) -> ChannelConfig:
    kind = table.get("type", "str")
    if kind not in CHANNEL_TYPES:
        table.fail("type", f"unknown channel type {kind!r}; expected one of: {', '.join(CHANNEL_TYPES)}")
    name = table.get("name", "str", kind)
    options: dict[str, Any] = {"digest": table.get("digest", "duration", 0.0)}
    if kind == "console":
        options["color"] = table.get("color", "bool", True)
    else:
        options["timeout"] = table.get("timeout", "timeout", 10.0)
        options["min_interval"] = table.get(
            "min_interval", "duration", 1.0 if kind in ("slack", "slack_app") else 0.0
        )
    if kind == "slack_app":
        options.update(_slack_app_options(table))
    secrets = {
        role: required_secret(table, environ, key, default_env, what)
        for role, (key, default_env, what) in _CHANNEL_SECRETS[kind].items()
    }
    if kind in ("slack", "webhook"):
        check_http_url(table, secrets["url"])
    if "signing" in secrets:
        _check_signing_secret(table, secrets["signing"])
    if kind == "slack_app":
        _check_slack_tokens(table, secrets)
    route = route_from_table(table, people, sources)
    table.finish()
    return ChannelConfig(name=name, type=kind, options=options, secrets=secrets, route=route)


def _check_signing_secret(table: Table, secret: Secret) -> None:
    size = len(secret.reveal().encode())
    if size < MIN_SIGNING_SECRET:
        table.fail(
            "secret_env",
            f"${secret.env_name} is {size} bytes; a signing secret needs at least {MIN_SIGNING_SECRET} "
            "(make one with: openssl rand -hex 32)",
        )


def _slack_app_options(table: Table) -> dict[str, Any]:
    """Where a Slack app posts: the conversation, and the Web API's address (another for GovSlack)."""
    channel = table.get("channel", "str")
    if not _SLACK_CHANNEL.fullmatch(channel):
        table.fail(
            "channel", f"expected a channel id such as C0123ABCD or a name such as #alerts, got {channel!r}"
        )
    if table.data.get("digest"):
        table.fail("digest", "a slack_app channel sends each alert on its own (its buttons act on one alert)")
    api_url = table.get("api_url", "str", SLACK_API_URL)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        table.fail("api_url", f"expected an http:// or https:// URL such as {SLACK_API_URL}, got {api_url!r}")
    return {"channel": channel, "api_url": api_url if api_url.endswith("/") else api_url + "/"}


def _check_slack_tokens(table: Table, secrets: dict[str, Secret]) -> None:
    for role, (key, prefix) in _TOKEN_PREFIXES.items():
        if not secrets[role].reveal().startswith(prefix):
            table.fail(key, f"${secrets[role].env_name} does not start with {prefix}; is it the other token?")
