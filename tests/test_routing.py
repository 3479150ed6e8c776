"""Routing: each channel's filters and a rule's own channels decide, at outbox time, which channel gets which
alert. Real settings files, the real rule pack and pipeline, real SQLite, and real HTTP receivers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot.app import build_detector, build_pipeline
from bot.routing import Router
from bot.timeutil import utcnow
from bot.watchdog import notice
from config import DEFAULT_RULES, ConfigError, load_settings
from config.routes import Route
from config.settings import Settings
from storage import Store
from tests.conftest import ROOT, post_record
from tests.receiver import Receiver

SOCIAL = [
    post_record("1", "I'm up for a cage match if he is lol", "2023-06-21T02:58:00Z"),  # cage-fight, 4
    post_record("2", "Zuck is a chicken", "2023-06-21T03:10:00Z"),  # coward-taunt, 3
    {  # a response: no alert of its own, the exchange's second turn
        "platform": "instagram",
        "id": "C1",
        "author": "zuck",
        "text": "Send Me Location",
        "created_at": "2023-06-21T18:20:00Z",
    },
    post_record("4", 'I have a great move that I call "The Walrus"', "2023-06-21T22:03:00Z"),  # no rule
]
PRESS_POST = "https://www.lemonde.example/cage"
PRESS = [
    {
        "platform": "rss",
        "id": PRESS_POST,
        "author": "lemonde",
        "text": "Musk défie Zuckerberg dans un combat en cage",  # cage-fight, 4: the press retelling
        "created_at": "2023-06-21T19:02:00Z",
    }
]
PEOPLE = """
[[people]]
id = "musk"
accounts = ["x:elonmusk"]

[[people]]
id = "zuck"
accounts = ["instagram:zuck", "threads:zuck", "x:finkd"]

[[rivalries]]
people = ["musk", "zuck"]
"""
WALRUS_RULE = """
[[rules]]
id = "walrus"
category = "taunt"
severity = 3
query = "walrus"
channels = ["musk-watch"]
"""


def channel(name: str, filters: str = "") -> str:
    return f'[[channels]]\nname = "{name}"\ntype = "console"\ncolor = false\n{filters}\n'


@pytest.fixture
def settings_with(tmp_path, write_config, write_feed):
    """Settings with two replay sources ("social" and "press"), Musk and Zuckerberg as rivals, and the
    channels given; `rules` replaces the shipped rule pack."""

    def make(channels: str, rules: Path = DEFAULT_RULES, environ: dict[str, str] | None = None) -> Settings:
        social, press = write_feed(SOCIAL, name="social.jsonl"), write_feed(PRESS, name="press.jsonl")
        text = f"""
[storage]
path = "{tmp_path}/r.db"

[matcher]
rules = "{rules}"

[detector]
model = "off"

[[sources]]
name = "social"
type = "replay"
path = "{social}"

[[sources]]
name = "press"
type = "replay"
path = "{press}"
coverage = true
{PEOPLE}
{channels}
"""
        return load_settings(write_config(text), environ=environ or {})

    return make


@pytest.fixture
def rules_with_walrus(tmp_path) -> Path:
    """The shipped rule pack plus a rule that names its channel."""
    rules = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES, rules)
    (rules / "walrus.toml").write_text(WALRUS_RULE, encoding="utf-8")
    return rules


def poll_everything(settings: Settings, store: Store) -> None:
    pipeline = build_pipeline(settings, store, paced=False)
    for source, feed in pipeline.feeds():
        pipeline.poll_until_caught_up(source, feed)


def routed(settings: Settings) -> dict[str, set[str]]:
    """Poll every feed through the real pipeline; what each channel's outbox got: post ids, and "exchange"
    for an exchange turn."""
    with Store.open(settings.database) as store:
        poll_everything(settings, store)
        rows = store.db.execute("SELECT channel, payload FROM alerts").fetchall()
    got: dict[str, set[str]] = {c.name: set() for c in settings.channels}
    for name, payload in rows:
        alert = json.loads(payload)
        got[name].add("exchange" if alert.get("kind") == "exchange" else alert["post"]["id"])
    return got


# -- through the real pipeline: which channel gets which alert -------------------------------------------


def test_a_channel_without_filters_gets_every_alert_but_press_coverage(settings_with):
    got = routed(settings_with(channel("everything")))
    assert got["everything"] == {"1", "2", "exchange"}


def test_only_a_channel_that_opts_into_coverage_gets_hits_on_posts_from_rss_feeds(settings_with):
    got = routed(settings_with(channel("everything") + channel("press-desk", "coverage = true")))
    assert PRESS_POST not in got["everything"]
    assert got["press-desk"] == {"1", "2", "exchange", PRESS_POST}


def test_a_channel_with_min_severity_4_gets_no_severity_3_alert(settings_with):
    got = routed(settings_with(channel("everything") + channel("pager", "min_severity = 4")))
    assert got["everything"] == {"1", "2", "exchange"}
    assert got["pager"] == {"1", "exchange"}  # "2" is a taunt of severity 3; the exchange is at 5


def test_categories_pick_hits_and_name_exchange_turns_as_exchange(settings_with):
    got = routed(
        settings_with(
            channel("taunts", 'categories = ["taunt"]')
            + channel("fights", 'categories = ["challenge", "exchange"]')
        )
    )
    assert got == {"taunts": {"2"}, "fights": {"1", "exchange"}}


def test_a_rules_filter_picks_hits_and_leaves_exchange_turns_to_categories(settings_with):
    got = routed(
        settings_with(
            channel("one-rule", 'rules = ["coward-taunt"]')
            + channel("one-rule-only", 'rules = ["coward-taunt"]\ncategories = ["taunt"]')
        )
    )
    assert got == {"one-rule": {"2", "exchange"}, "one-rule-only": {"2"}}


def test_a_people_filter_matches_any_of_their_accounts_and_any_exchange_they_are_in(settings_with):
    got = routed(
        settings_with(
            channel("musk", 'people = ["musk"]')
            + channel("zuck", 'people = ["zuck"]\ncoverage = true')
            + channel("both", 'people = ["zuck", "musk"]')
        )
    )
    assert got["musk"] == {"1", "2", "exchange"}
    assert got["zuck"] == {"exchange"}  # his one post is a response; the press is nobody's account
    assert got["both"] == {"1", "2", "exchange"}


def test_a_platforms_filter_takes_an_exchange_with_a_post_on_one_of_them(settings_with):
    got = routed(
        settings_with(
            channel("instagram", 'platforms = ["instagram"]')
            + channel("rss", 'platforms = ["rss"]\ncoverage = true')
        )
    )
    assert got == {"instagram": {"exchange"}, "rss": {PRESS_POST}}


def test_a_sources_filter_takes_hits_and_exchange_turns_of_those_sources_only(settings_with):
    got = routed(
        settings_with(
            channel("social", 'sources = ["social"]')
            + channel("press", 'sources = ["press"]\ncoverage = true')
        )
    )
    assert got == {"social": {"1", "2", "exchange"}, "press": {PRESS_POST}}


def test_filters_combine_with_and_across_keys(settings_with):
    got = routed(
        settings_with(channel("narrow", 'people = ["musk"]\nmin_severity = 4\ncategories = ["taunt"]'))
    )
    assert got["narrow"] == set()  # Musk's taunt is severity 3, his severity-4 hit is a challenge


def test_a_rule_that_names_its_channels_goes_only_to_them(settings_with, rules_with_walrus):
    got = routed(settings_with(channel("everything") + channel("musk-watch"), rules=rules_with_walrus))
    assert got["everything"] == {"1", "2", "exchange"}
    assert got["musk-watch"] == {"1", "2", "4", "exchange"}


def test_a_rule_that_names_a_channel_is_still_subject_to_its_filters(settings_with, rules_with_walrus):
    got = routed(
        settings_with(
            channel("everything") + channel("musk-watch", "min_severity = 4"), rules=rules_with_walrus
        )
    )
    assert "4" not in got["everything"] | got["musk-watch"]  # walrus is severity 3
    assert got["musk-watch"] == {"1", "exchange"}


def test_a_filtered_out_channel_gets_no_row_while_mutes_and_keys_work_as_before(settings_with):
    settings = settings_with(channel("everything") + channel("pager", "min_severity = 4"))
    with Store.open(settings.database) as store:
        store.mute(utcnow().replace(year=2999), rule_id="cage-fight")
        poll_everything(settings, store)
        rows = store.db.execute(
            "SELECT channel, rule_id, status, key FROM alerts WHERE hit_id IS NOT NULL ORDER BY channel, id"
        ).fetchall()
    assert [(c, r, s) for c, r, s, _ in rows] == [
        ("everything", "cage-fight", "muted"),
        ("everything", "coward-taunt", "pending"),
        ("pager", "cage-fight", "muted"),
    ]
    assert rows[0][3] == rows[2][3]  # one idempotency key for the same alert in every channel


def test_each_receiver_gets_what_its_channel_wants(settings_with):
    secret = "s" * 32
    with Receiver() as everything, Receiver() as pager:
        environ = {
            "ALL_URL": everything.url,
            "PAGER_URL": pager.url,
            "RINGSIDE_WEBHOOK_SECRET": secret,
        }
        hooks = (
            '[[channels]]\nname = "all"\ntype = "webhook"\nurl_env = "ALL_URL"\n'
            '[[channels]]\nname = "pager"\ntype = "webhook"\nurl_env = "PAGER_URL"\nmin_severity = 4\n'
        )
        settings = settings_with(hooks, environ=environ)
        with Store.open(settings.database) as store:
            pipeline = build_pipeline(settings, store, paced=False)
            for source, feed in pipeline.feeds():
                pipeline.poll_until_caught_up(source, feed)
            pipeline.deliver_all()

    def what(receiver: Receiver) -> list[str]:
        return [
            r.json["post"]["id"] if r.json["type"] == "alert" else r.json["type"] for r in receiver.received
        ]

    assert what(everything) == ["1", "2", "exchange"]
    assert what(pager) == ["1", "exchange"]


# -- health notices and the router -----------------------------------------------------------------------


def test_a_health_notice_reaches_every_channel_whatever_its_filters(settings_with):
    picky = 'min_severity = 5\ncategories = ["rivalry"]\nrules = ["feud"]\npeople = ["zuck"]\n'
    picky += 'platforms = ["mastodon"]\nsources = ["press"]'
    settings = settings_with(channel("everything") + channel("picky", picky))
    router = Router(["everything", "picky"], settings.channels, settings.exchanges)
    failing = notice("failing", "social", "feed", utcnow(), "HTTP 503")
    assert router.channels_for(failing, source="social") == ["everything", "picky"]
    hit = {"rule": {"id": "dare", "category": "challenge", "severity": 3}}
    hit["post"] = {"platform": "x", "author": "elonmusk"}
    assert router.channels_for(hit, source="social") == ["everything"]


def test_a_channel_given_in_code_without_a_table_gets_everything(settings_with):
    settings = settings_with(channel("pager", "min_severity = 5"))
    router = Router(["pager", "recorder"], settings.channels, settings.exchanges)
    hit = {
        "rule": {"id": "dare", "category": "challenge", "severity": 3},
        "post": {"platform": "rss", "author": "a"},
    }
    assert router.channels_for(hit) == ["recorder"]


# -- settings: read, and refused in one line naming the file and the key -----------------------------------


def test_a_channels_filters_are_read(settings_with):
    filters = (
        'min_severity = 4\ncategories = ["challenge", "exchange"]\nrules = ["cage-fight", "model"]\n'
        'people = ["musk"]\nplatforms = ["X", "instagram"]\nsources = ["social"]\ncoverage = true'
    )
    settings = settings_with(channel("everything") + channel("slack-main", filters))
    everything, main = settings.channels
    assert everything.route == Route()
    assert main.route == Route(
        min_severity=4,
        categories=frozenset({"challenge", "exchange"}),
        rules=frozenset({"cage-fight", "model"}),
        people=frozenset({"musk"}),
        platforms=frozenset({"x", "instagram"}),
        sources=frozenset({"social"}),
        coverage=True,
    )


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ("min_severty = 4", "channels[0].min_severty: unknown key; expected one of: "),
        ('min_severity = "high"', "channels[0].min_severity: expected a whole number, got a string 'high'"),
        ("min_severity = 6", "channels[0].min_severity: expected a whole number from 1 to 5, got 6"),
        ('categories = "taunt"', "channels[0].categories: expected a list of names"),
        ("rules = []", "channels[0].rules: an empty list lets nothing through; leave the key out"),
        ('people = ["zuk"]', "channels[0].people: 'zuk' is not the id of a [[people]] table"),
        ('platforms = ["twitter"]', "channels[0].platforms: 'twitter' is not a platform (x, "),
        ('sources = ["presse"]', "channels[0].sources: 'presse' is not the name of a [[sources]] table"),
        ('coverage = "yes"', "channels[0].coverage: expected true or false, got a string 'yes'"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_file_and_the_key(settings_with, tmp_path, filters, says):
    with pytest.raises(ConfigError) as refused:
        settings_with(channel("everything", filters))
    assert str(refused.value).startswith(f"{tmp_path / 'ringside.toml'}: {says}")


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ('rules = ["cage-figth"]', "channels[0].rules: 'cage-figth' is not the id of a rule in "),
        ('categories = ["taunts"]', "channels[0].categories: 'taunts' is not a category; expected one of: "),
    ],
)
def test_a_rule_or_category_the_rule_pack_lacks_is_refused(settings_with, tmp_path, filters, says):
    settings = settings_with(channel("everything", filters))
    with pytest.raises(ConfigError) as refused:
        build_detector(settings)
    assert str(refused.value).startswith(f"{tmp_path / 'ringside.toml'}: {says}")


def test_a_rule_naming_a_channel_that_does_not_exist_is_refused(settings_with, rules_with_walrus):
    settings = settings_with(channel("everything"), rules=rules_with_walrus)
    with pytest.raises(ConfigError) as refused:
        build_detector(settings)
    assert str(refused.value) == (
        f"{rules_with_walrus / 'walrus.toml'}: rule walrus: channels: 'musk-watch' is not the name of a "
        f"[[channels]] table in {settings.path}"
    )


@pytest.mark.parametrize("value", ['"musk-watch"', "[]", "[1]"])
def test_a_rules_channels_must_be_a_list_of_names(settings_with, tmp_path, value):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "walrus.toml").write_text(WALRUS_RULE.replace('["musk-watch"]', value), encoding="utf-8")
    settings = settings_with(channel("musk-watch"), rules=rules)
    with pytest.raises(ConfigError, match=r"walrus.toml: rule walrus: channels: expected a list of channel"):
        build_detector(settings)


# -- check-config, as a user runs it ---------------------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(path), "check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_config_prints_the_channels_each_rule_reaches_and_warns_of_one_that_reaches_none(
    settings_with, rules_with_walrus
):
    channels = channel("everything", 'categories = ["challenge", "taunt", "exchange"]')
    channels += channel("musk-watch", 'min_severity = 4\npeople = ["musk"]')
    settings = settings_with(channels, rules=rules_with_walrus)
    done = check_config(settings.path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert (
        "route: rule cage-fight (challenge, severity 4) -> everything, musk-watch (only people musk)" in lines
    )
    assert "route: rule dare (challenge, severity 3) -> everything" in lines
    assert "route: rule accept-challenge (response): silent, no alert of its own" in lines
    assert "route: exchange turns -> everything, musk-watch (only min_severity 4; people musk)" in lines
    assert "route: model (any category)" not in done.stderr  # the model is off
    warnings = [line for line in lines if line.startswith("warning:")]
    why = "everything: wants categories challenge, exchange, taunt; musk-watch: wants min_severity 4"
    assert warnings == [
        f"warning: rule rematch (rivalry, severity 2) reaches no channel ({why})",
        f"warning: rule feud (rivalry, severity 2) reaches no channel ({why})",
        "warning: rule walrus (taunt, severity 3) reaches no channel (the rule sends only to musk-watch; "
        "musk-watch: wants min_severity 4)",
        "warning: source press (replay): its hits are press coverage and no channel has coverage = true, "
        "so they are stored but nobody is alerted",
    ]
    shown = json.loads(done.stdout)
    assert shown["routes"]["rules"]["walrus"] == []
    assert shown["routes"]["rules"]["cage-fight"] == ["everything", "musk-watch"]
    assert shown["channels"][1]["min_severity"] == 4 and shown["channels"][1]["people"] == ["musk"]


def test_check_config_warns_when_an_rss_source_reaches_no_channel_for_want_of_coverage(write_config):
    rss = '[[sources]]\nname = "press"\ntype = "rss"\nfeeds = ["https://www.lemonde.fr/rss/une.xml"]\n'
    done = check_config(write_config(rss + channel("everything") + '[detector]\nmodel = "off"\n'))
    assert done.returncode == 0, done.stderr
    assert (
        "warning: source press (rss): its hits are press coverage and no channel has coverage = true, "
        "so they are stored but nobody is alerted"
    ) in done.stderr.splitlines()
    done = check_config(
        write_config(rss + channel("everything", "coverage = true") + '[detector]\nmodel = "off"\n')
    )
    assert done.returncode == 0 and "warning" not in done.stderr


def test_check_config_refuses_an_unknown_rule_in_a_filter_in_one_line(settings_with):
    settings = settings_with(channel("everything", 'rules = ["cage-figth"]'))
    done = check_config(settings.path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"ringside: error: {settings.path}: channels[0].rules: 'cage-figth' is not the id of a rule in "
        f"{DEFAULT_RULES}"
    ]


def test_the_readmes_routing_example_is_valid(tmp_path, write_feed):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Routing\n") : readme.index("### Guarantees\n")]
    channels, rule = (block.split("```", 1)[0] for block in section.split("```toml\n")[1:3])
    rules = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES, rules)
    (rules / "walrus.toml").write_text(rule, encoding="utf-8")
    sources = (
        f'[matcher]\nrules = "{rules}"\n[detector]\nmodel = "off"\n'
        f'[[sources]]\nname = "x"\ntype = "replay"\npath = "{write_feed(SOCIAL)}"\n'
        '[[sources]]\nname = "press"\ntype = "rss"\nfeeds = ["https://www.lemonde.fr/rss/une.xml"]\n'
    )
    path = tmp_path / "mine.toml"
    path.write_text(sources + PEOPLE + channels, encoding="utf-8")
    environ = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
        "RINGSIDE_WEBHOOK_URL": "https://hooks.example.com/h",
        "RINGSIDE_WEBHOOK_SECRET": "s" * 32,
        "DISCORD_APPRISE_URL": "discord://1/abc",
    }
    settings = load_settings(path, environ=environ)
    build_detector(settings)  # the rule's channel exists
    main, musk, press = settings.channels
    assert (main.route.min_severity, musk.route.people, press.route.coverage) == (4, {"musk"}, True)


WATCH = """
[[watches]]
name = "musk-zuck"
type = "frequency"
people = ["musk", "zuck"]
count = 3
hours = 48
severity = 4
"""


def watch_alert(severity: int = 4) -> dict:
    """A frequency watch's payload, as bot.watches makes it."""
    return {
        "kind": "watch",
        "key": "rs1f-test",
        "rule": {"id": "musk-zuck", "category": "frequency", "severity": severity},
        "people": ["musk", "zuck"],
        "platforms": ["threads", "x"],
    }


def test_a_watch_alert_is_routed_by_its_type_name_severity_and_people(settings_with):
    settings = settings_with(
        channel("pager", 'categories = ["frequency"]\nmin_severity = 4')
        + channel("desk", 'categories = ["challenge"]')
        + channel("by-name", 'rules = ["musk-zuck"]')
        + channel("bezos-desk", 'people = ["musk"]\nplatforms = ["instagram"]')
        + WATCH
    )
    router = Router.from_settings(
        settings, build_detector(settings).matcher.rules, ["pager", "desk", "by-name", "bezos-desk"]
    )
    assert router.channels_for(watch_alert()) == ["pager", "by-name"]
    assert router.channels_for(watch_alert(severity=3)) == ["by-name"]


def test_a_spike_passes_people_and_platform_filters_whoever_wrote_its_newest_posts(settings_with):
    settings = settings_with(channel("musk-desk", 'people = ["musk"]\nplatforms = ["x"]') + WATCH)
    router = Router.from_settings(settings, build_detector(settings).matcher.rules, ["musk-desk"])
    spike = watch_alert() | {
        "rule": {"id": "musk-zuck", "category": "spike", "severity": 4},
        "people": [],  # the ten posts it shows happen to be by nobody in [[people]], on Bluesky
        "platforms": ["bluesky"],
    }
    assert router.channels_for(spike) == ["musk-desk"]


def test_check_config_shows_where_each_watch_goes_and_warns_of_one_that_reaches_none(settings_with):
    channels = channel("desk", 'categories = ["challenge"]') + channel("pager", "min_severity = 5")
    settings = settings_with(channels + WATCH + WATCH.replace("musk-zuck", "zuck-musk").replace("= 4", "= 5"))
    done = check_config(settings.path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "route: watch zuck-musk (frequency, severity 5) -> pager" in lines
    assert (
        "warning: watch musk-zuck (frequency, severity 4) reaches no channel (desk: wants categories "
        "challenge; pager: wants min_severity 5)"
    ) in lines
    assert json.loads(done.stdout)["routes"]["watches"] == {"musk-zuck": [], "zuck-musk": ["pager"]}


def test_a_channel_may_filter_on_a_watch_type_or_name_which_check_config_accepts(settings_with):
    settings = settings_with(
        channel("spikes", 'categories = ["spike", "silence"]\nrules = ["musk-zuck"]') + WATCH
    )
    Router.from_settings(settings, build_detector(settings).matcher.rules, ["spikes"])  # no ConfigError


def test_an_rss_source_is_press_coverage_unless_it_says_it_bridges_someones_own_posts(
    write_config, write_feed
):
    feed = write_feed(SOCIAL)
    text = f"""
[[sources]]
name = "press"
type = "rss"
feeds = ["https://www.lemonde.example/rss.xml"]

[[sources]]
name = "bridge"
type = "rss"
feeds = ["https://bridge.example/elonmusk.rss"]
coverage = false

[[sources]]
name = "social"
type = "replay"
path = "{feed}"
"""
    settings = load_settings(write_config(text), environ={})
    assert {source.name: source.coverage for source in settings.sources} == {
        "press": True,
        "bridge": False,
        "social": False,
    }


def test_hits_of_a_source_that_is_not_press_reach_every_channel_even_on_platform_rss(settings_with):
    settings = settings_with(channel("everything") + channel("press-desk", "coverage = true"))
    settings = replace(settings, sources=tuple(replace(s, coverage=False) for s in settings.sources))
    got = routed(settings)
    assert PRESS_POST in got["everything"]


def test_check_config_says_a_channel_takes_only_some_of_the_models_hits_and_exchange_turns(settings_with):
    """The model's hits and exchange turns have no severity (nor the model's a category) before they happen:
    a channel that filters on them takes only some, and its route line must say so."""
    from bot.reach import reach

    pager = channel("pager", 'min_severity = 4\ncategories = ["challenge", "exchange"]')
    settings = settings_with(channel("all") + pager)
    lines = reach(settings, build_detector(settings).matcher.rules, model=True).lines
    assert (
        "route: model (any category) -> all, pager (only min_severity 4; categories challenge, exchange)"
        in lines
    )
    assert "route: exchange turns -> all, pager (only min_severity 4)" in lines
