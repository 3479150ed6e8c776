"""Settings: the shipped default loads with no credentials; every mistake is named in one line."""

from __future__ import annotations

import pytest

import run_bot
from config import DEFAULT_CONFIG, ConfigError, load_settings

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
