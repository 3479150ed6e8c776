"""Settings: the shipped default loads with no credentials; every mistake is named in one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import run_bot
from config import DEFAULT_CONFIG, DEFAULT_RULES, ConfigError, load_settings
from storage import Store
from tests.conftest import DEMO_FEED, ROOT

X_SOURCE = """
[[sources]]
name = "x"
type = "x"
accounts = ["elonmusk", "@finkd"]
"""


def test_the_shipped_default_loads_without_any_credentials():
    settings = load_settings(DEFAULT_CONFIG, environ={})
    assert [s.type for s in settings.sources] == ["replay"]
    assert [c.type for c in settings.channels] == ["console"]
    assert settings.sources[0].options["path"].is_file()


def test_a_mistyped_key_is_named_with_its_file_and_the_keys_expected(write_config):
    path = write_config('[schedule]\ndeliver_evry = "5s"\n' + X_SOURCE)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={"X_BEARER_TOKEN": "t"})
    message = str(error.value)
    assert message.startswith(f"{path}: schedule.deliver_evry: unknown key; expected one of:")
    assert "deliver_every" in message
    assert "\n" not in message


def test_a_wrong_type_names_the_key_and_what_was_expected(write_config):
    path = write_config(X_SOURCE + 'first_poll_limit = "twenty"\n')
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.first_poll_limit: expected a whole number, got a string"
    ):
        load_settings(path, environ={"X_BEARER_TOKEN": "t"})


def test_a_bad_duration_says_what_a_duration_looks_like(write_config):
    path = write_config(X_SOURCE + 'every = "often"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.every: expected a duration such as 30s, 5m or 2h"):
        load_settings(path, environ={"X_BEARER_TOKEN": "t"})


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.toml: config file not found"):
        load_settings(tmp_path / "nowhere.toml", environ={})


def test_broken_toml_is_reported_with_its_line(write_config):
    path = write_config("[storage\npath = 1\n")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_settings(path, environ={})


def test_an_x_source_without_a_token_names_the_variable_to_set(write_config):
    path = write_config(X_SOURCE)
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.token_env: the environment variable X_BEARER_TOKEN is not set"
    ):
        load_settings(path, environ={})


def test_the_token_comes_from_the_environment_and_never_shows(write_config):
    path = write_config(X_SOURCE)
    settings = load_settings(path, environ={"X_BEARER_TOKEN": "AAAA-very-secret"})
    source = settings.sources[0]
    assert source.secret.reveal() == "AAAA-very-secret"
    assert source.options["accounts"] == ("elonmusk", "finkd")
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.masked())


def test_a_replay_file_that_does_not_exist_is_named(write_config):
    path = write_config('[[sources]]\ntype = "replay"\npath = "{tmp}/missing.jsonl"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.path: replay file .*missing\.jsonl not found"):
        load_settings(path, environ={})


def test_two_sources_with_one_name_are_refused(write_config, write_feed):
    feed = write_feed([])
    one = f'[[sources]]\nname = "a"\ntype = "replay"\npath = "{feed}"\n'
    with pytest.raises(ConfigError, match=r"sources\[1\]\.name: 'a' is used twice"):
        load_settings(write_config(one + one), environ={})


def test_an_unknown_source_type_lists_the_known_ones(write_config):
    path = write_config('[[sources]]\ntype = "myspace"\n')
    with pytest.raises(ConfigError, match=r"unknown source type 'myspace'; expected one of: replay, x"):
        load_settings(path, environ={})


def test_ringside_db_in_the_environment_overrides_the_database_path(tmp_path):
    settings = load_settings(DEFAULT_CONFIG, environ={"RINGSIDE_DB": str(tmp_path / "other.db")})
    assert settings.database == tmp_path / "other.db"


def test_the_cli_turns_a_config_error_into_one_line_and_exit_code_2(write_config, capsys):
    path = write_config("[schedule]\njitter = true\n")
    assert run_bot.main(["--config", str(path), "once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"ringside: error: {path}: schedule.jitter: expected a duration such as 30s, 5m or 2h, got True"
    ]


def test_check_config_prints_settings_with_the_secret_masked(write_config, capsys, monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", "AAAA-very-secret")
    path = write_config(X_SOURCE)
    assert run_bot.main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr()
    assert "$X_BEARER_TOKEN (set, ****)" in out.out
    assert "very-secret" not in out.out + out.err
    assert '"max_text": 50000,\n    "max_positions": 1000' in out.out  # the limits a post is matched under


def test_ringside_config_in_the_environment_names_the_settings_file(write_config, write_feed):
    path = write_config(
        f'[[sources]]\nname = "mine"\ntype = "replay"\npath = "{write_feed([])}"\n', name="mine.toml"
    )
    settings = load_settings(environ={"RINGSIDE_CONFIG": str(path)})
    assert settings.path == path and settings.sources[0].name == "mine"


def test_the_http_port_comes_from_the_environment_when_set(write_config):
    settings = load_settings(
        DEFAULT_CONFIG, environ={"RINGSIDE_HTTP_PORT": "8080", "RINGSIDE_HTTP_HOST": "0.0.0.0"}
    )
    assert (settings.service.http_host, settings.service.http_port) == ("0.0.0.0", 8080)
    with pytest.raises(ConfigError, match="RINGSIDE_HTTP_PORT: expected a port number, got 'http'"):
        load_settings(DEFAULT_CONFIG, environ={"RINGSIDE_HTTP_PORT": "http"})


def test_a_rivalry_with_someone_not_in_people_is_named(write_config, write_feed):
    source = f'[[sources]]\ntype = "replay"\npath = "{write_feed([])}"\n'
    people = '[[people]]\nid = "musk"\naccounts = ["x:elonmusk"]\n[[rivalries]]\npeople = ["musk", "zuck"]\n'
    with pytest.raises(
        ConfigError, match=r"rivalries\[0\]\.people: 'zuck' is not the id of a \[\[people\]\] table"
    ):
        load_settings(write_config(source + people), environ={})


def test_an_account_without_its_platform_is_named(write_config, write_feed):
    source = f'[[sources]]\ntype = "replay"\npath = "{write_feed([])}"\n'
    with pytest.raises(ConfigError, match=r"people\[0\]\.accounts: 'elonmusk': expected platform:handle"):
        load_settings(write_config(source + '[[people]]\nid = "musk"\naccounts = ["elonmusk"]\n'), environ={})


# -- bad input, fuzzed: every one is one line naming what is wrong, and exit code 2 -------------------------

SETTINGS = """
[storage]
path = "{tmp}/r.db"

[matcher]
rules = "{rules}"

[detector]
model = "off"

[[sources]]
name = "demo"
type = "replay"
path = "{feed}"
"""
WEBHOOK_ENV = {"RINGSIDE_WEBHOOK_URL": "https://hooks.example.com/h", "RINGSIDE_WEBHOOK_SECRET": "s" * 32}


@dataclass(frozen=True)
class BadInput:
    """One bad input: TOML added to a valid settings file (a key alone lands in the replay source), the
    environment, the command, and what the error line must name."""

    names: str
    settings: str = ""
    argv: tuple[str, ...] = ("check-config",)
    env: dict[str, str] = field(default_factory=dict)
    rules: str | None = None  # the text of the only rule file, instead of the shipped rules
    setup: str = ""  # "non-utf8", "settings-dir", "rule-dir": a file that cannot be read as one


def x_source(accounts: str, extra: str = "") -> str:
    return f'[[sources]]\nname = "x"\ntype = "x"\naccounts = {accounts}\n{extra}'


def webhook(extra: str = "") -> str:
    return f'[[channels]]\nname = "hook"\ntype = "webhook"\n{extra}'


def rule(query: str) -> str:
    return f'[[rules]]\nid = "r"\ncategory = "challenge"\nquery = "{query}"\n'


X_TOKEN = {"X_BEARER_TOKEN": "AAAA-token"}
BAD_INPUTS = {
    "deliver_every nan": BadInput("schedule.deliver_every", "[schedule]\ndeliver_every = nan"),
    "deliver_every inf": BadInput("schedule.deliver_every", "[schedule]\ndeliver_every = inf"),
    "deliver_every zero": BadInput("schedule.deliver_every", '[schedule]\ndeliver_every = "0s"'),
    "deliver_every negative": BadInput("schedule.deliver_every", "[schedule]\ndeliver_every = -5"),
    "deliver_every huge": BadInput("schedule.deliver_every", '[schedule]\ndeliver_every = "99999999d"'),
    "jitter inf": BadInput("schedule.jitter", "[schedule]\njitter = inf"),
    "every nan": BadInput("sources[0].every", "every = nan"),
    "every 1e300": BadInput("sources[0].every", "every = 1e300"),
    "replay_seconds inf": BadInput("sources[0].replay_seconds", "replay_seconds = inf"),
    "heartbeat zero": BadInput("service.heartbeat_every", "[service]\nheartbeat_every = 0"),
    "shutdown_grace inf": BadInput("service.shutdown_grace", "[service]\nshutdown_grace = inf"),
    "retry_base zero": BadInput("delivery.retry_base", '[delivery]\nretry_base = "0s"'),
    "max_age 1e300": BadInput("delivery.max_age", "[delivery]\nmax_age = 1e300"),
    "window nan": BadInput("exchanges.window", "[exchanges]\nwindow = nan"),
    "channel timeout zero": BadInput("channels[0].timeout", webhook('timeout = "0s"'), env=WEBHOOK_ENV),
    "channel timeout huge": BadInput("channels[0].timeout", webhook('timeout = "100000d"'), env=WEBHOOK_ENV),
    "x timeout nan": BadInput("sources[1].timeout", x_source('["finkd"]', "timeout = nan"), env=X_TOKEN),
    "webhook file url": BadInput(
        "RINGSIDE_WEBHOOK_URL", webhook(), env={**WEBHOOK_ENV, "RINGSIDE_WEBHOOK_URL": "file:///etc/passwd"}
    ),
    "webhook ftp url": BadInput(
        "RINGSIDE_WEBHOOK_URL", webhook(), env={**WEBHOOK_ENV, "RINGSIDE_WEBHOOK_URL": "ftp://example.com/h"}
    ),
    "webhook url without scheme": BadInput(
        "RINGSIDE_WEBHOOK_URL", webhook(), env={**WEBHOOK_ENV, "RINGSIDE_WEBHOOK_URL": "example.com/hook"}
    ),
    "webhook url without host": BadInput(
        "RINGSIDE_WEBHOOK_URL", webhook(), env={**WEBHOOK_ENV, "RINGSIDE_WEBHOOK_URL": "https:///hook"}
    ),
    "slack file url": BadInput(
        "SLACK_WEBHOOK_URL",
        '[[channels]]\ntype = "slack"',
        env={"SLACK_WEBHOOK_URL": "file:///T0/B0/secret"},
    ),
    "signing secret of 5": BadInput(
        "RINGSIDE_WEBHOOK_SECRET", webhook(), env={**WEBHOOK_ENV, "RINGSIDE_WEBHOOK_SECRET": "short"}
    ),
    "signing secret of 15": BadInput(
        "RINGSIDE_WEBHOOK_SECRET", webhook(), env={**WEBHOOK_ENV, "RINGSIDE_WEBHOOK_SECRET": "x" * 15}
    ),
    "x account with a space": BadInput("sources[1].accounts", x_source('["elon musk"]'), env=X_TOKEN),
    "x account with a quote": BadInput("sources[1].accounts", x_source("['elon\"musk']"), env=X_TOKEN),
    "x account OR": BadInput("sources[1].accounts", x_source('["a OR b"]'), env=X_TOKEN),
    "x account in parentheses": BadInput("sources[1].accounts", x_source('["(finkd)"]'), env=X_TOKEN),
    "x account too long": BadInput("sources[1].accounts", x_source('["abcdefghijklmnop"]'), env=X_TOKEN),
    "x account operator": BadInput("sources[1].accounts", x_source('["from:finkd"]'), env=X_TOKEN),
    "channel type a number": BadInput("channels[0].type", "[[channels]]\ntype = 5"),
    "person id a number": BadInput("people[0].id", "[[people]]\nid = 1"),
    "http port a string": BadInput("service.http_port", '[service]\nhttp_port = "80"'),
    "max_attempts a float": BadInput("delivery.max_attempts", "[delivery]\nmax_attempts = 1.5"),
    "first_poll_limit a string": BadInput(
        "sources[1].first_poll_limit", x_source('["finkd"]', 'first_poll_limit = "20"'), env=X_TOKEN
    ),
    "threshold nan": BadInput("detector.threshold", setup="threshold-nan"),
    "settings not utf-8": BadInput("ringside.toml", setup="non-utf8"),
    "settings a directory": BadInput("ringside.toml", setup="settings-dir"),
    "rule file a directory": BadInput("bad.toml", setup="rule-dir"),
    "rules of strings": BadInput("rules[0]", rules='rules = ["a"]'),
    "rule of 990 NOTs": BadInput("rule r", rules=rule("NOT " * 990 + "cage")),
    "rule of 1000 parentheses": BadInput("rule r", rules=rule("(" * 1000 + "cage" + ")" * 1000)),
    "mute for 99999999d": BadInput("--for", argv=("mute", "--rule", "r", "--for", "99999999d")),
    "mute an empty author": BadInput("--author", argv=("mute", "--author", " @", "--for", "1h")),
    "unmute an empty rule": BadInput("--rule", argv=("unmute", "--rule", "")),
    "database under a file": BadInput("r.db", argv=("once",), setup="database-under-a-file"),
    "mute with the database under a file": BadInput(
        "r.db", argv=("mute", "--rule", "cage-fight"), setup="database-under-a-file"
    ),
    "mute for zero": BadInput("--for", argv=("mute", "--rule", "r", "--for", "0s")),
    "limit below one": BadInput("--limit", argv=("report", "latest-hits", "--limit", "-5")),
    "limit not a number": BadInput("--limit", argv=("search", "cage", "--limit", "abc")),
    "an unknown option": BadInput("--bogus", argv=("report", "latest-hits", "--bogus")),
    "prune everything": BadInput("--older-than", argv=("prune", "--older-than", "0s")),
    "resume an unknown channel": BadInput(
        "nosuch", argv=("alerts", "resume", "--channel", "nosuch"), setup="db"
    ),
    "since garbage": BadInput("--since", argv=("report", "latest-hits", "--since", "last tuesday")),
    "since huge": BadInput("--since", argv=("report", "latest-hits", "--since", "99999999999999999999d")),
    "until past year 9999": BadInput(
        "--until", argv=("report", "latest-hits", "--until", "9999-12-31T23:00:00-14:00")
    ),
    "search since huge": BadInput("--since", argv=("search", "cage", "--since", "9999999999d")),
    "prune older than huge": BadInput("--older-than", argv=("prune", "--older-than", "99999999d")),
}


def bad_input_files(case: BadInput, tmp_path: Path) -> Path:
    """The settings file (and rules) for `case`, written as a user would."""
    rules = DEFAULT_RULES
    if case.rules is not None or case.setup == "rule-dir":
        rules = tmp_path / "rules"
        rules.mkdir()
        if case.setup == "rule-dir":
            (rules / "bad.toml").mkdir()
        else:
            (rules / "mine.toml").write_text(case.rules, encoding="utf-8")
    text = SETTINGS.format(tmp=tmp_path, rules=rules, feed=DEMO_FEED) + case.settings + "\n"
    if case.setup == "database-under-a-file":
        (tmp_path / "file").write_text("not a directory\n", encoding="utf-8")
        text = text.replace(f"{tmp_path}/r.db", f"{tmp_path}/file/r.db")
    if case.setup == "db":  # a database to find: the input is wrong, not the file missing
        Store.open(tmp_path / "r.db").close()
    path = tmp_path / "ringside.toml"
    if case.setup == "settings-dir":
        path.mkdir()
    elif case.setup == "non-utf8":
        path.write_bytes(text.encode() + b"# caf\xe9\n")
    elif case.setup == "threshold-nan":
        path.write_text(text.replace('model = "off"', 'model = "off"\nthreshold = nan'), encoding="utf-8")
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_each_bad_input_is_one_line_naming_it_and_exit_code_2(case, tmp_path, capsys, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    config = bad_input_files(case, tmp_path)
    assert run_bot.main(["--config", str(config), *case.argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("ringside: error: ") and case.names in err, err
    for secret in case.env.values():
        assert secret not in err


def test_the_readmes_example_watching_one_person_on_three_platforms_and_the_press_is_valid(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Watching real accounts") : readme.index("### X\n")]
    opening = section.index("```toml\n") + len("```toml\n")
    example = section[opening : section.index("```\n", opening)]
    path = tmp_path / "mine.toml"
    path.write_text(f'[storage]\npath = "{tmp_path}/r.db"\n' + example, encoding="utf-8")
    settings = load_settings(path, environ={"X_BEARER_TOKEN": "AAAA-test"})
    assert [s.type for s in settings.sources] == ["x", "bluesky", "mastodon", "rss"]
    musk = next(p for p in settings.exchanges.people if p.id == "musk")
    assert {account.split(":")[0] for account in musk.accounts} == {"x", "bluesky", "mastodon"}
