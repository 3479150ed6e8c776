"""Rule previews on the stored history (`rules try`, `rules diff`) and the `ringside` console command.

The database is filled through the real pipeline from a replay file; the commands run as the user runs them,
in a subprocess of run_bot.py, so their output goes to a pipe (matched words between [[ ]])."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import run_bot
from bot.models import Fetch, Post
from bot.timeutil import iso, utcnow
from config import DEFAULT_RULES
from tests.conftest import DEMO_FEED, ROOT, replay_config

RECENT = utcnow() - timedelta(days=2)
FEED = [
    {"id": "1", "author": "elonmusk", "text": "I'm up for a cage match if he is lol"},
    {"id": "2", "author": "zuck", "platform": "instagram", "text": "Send Me Location"},
    {"id": "3", "author": "actu_tech_fr", "text": "Je suis prêt pour un combat en cage lol", "lang": "fr"},
    {"id": "4", "author": "filmfan", "text": "Nicolas Cage fights bees in his new film, with bees"},
    {"id": "5", "author": "elonmusk", "text": "Still up for a CAGE-MATCH, any time", "recent": 0},
    {
        "id": "6",
        "author": "zuck",
        "platform": "threads",
        "text": "The cage match is off \x1b[2J",
        "recent": 1,
    },
]


def feed_records() -> list[dict]:
    """FEED as replay records: posts 1-4 on 2023-06-21 an hour apart from 02:00, 5 and 6 in the last days."""
    records = []
    for number, item in enumerate(FEED):
        fields = {key: value for key, value in item.items() if key != "recent"}
        when = (
            RECENT + timedelta(hours=item["recent"])
            if "recent" in item
            else datetime(2023, 6, 21, 2, tzinfo=UTC) + timedelta(hours=number)
        )
        records.append({"platform": "x", "created_at": iso(when), **fields})
    return records


@pytest.fixture
def history(tmp_path, write_config, write_feed, capsys) -> Path:
    """FEED stored by `once` through the real pipeline (the shipped rules, no model); the settings file."""
    feed = write_feed(feed_records())
    config = write_config(replay_config(feed, tmp_path / "ringside.db"))
    assert run_bot.main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    return config


def ringside(config: Path, *args: str, program: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(program)] if program else [sys.executable, str(ROOT / "run_bot.py")]
    return subprocess.run(
        [*command, "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def heads(output: str) -> list[str]:
    """The keys of the posts listed, in order (each post's first line ends with its key)."""
    return [line.rsplit(" · ", 1)[1] for line in output.splitlines() if line.startswith("@")]


# -- rules try -------------------------------------------------------------------------------------------


def test_rules_try_lists_the_posts_a_query_hits_newest_first_with_the_matched_words_marked(history):
    done = ringside(history, "rules", "try", '"cage match"')
    assert done.returncode == 0, done.stderr
    assert heads(done.stdout) == ["threads:6", "x:5", "x:1"]
    assert "   Still up for a [[CAGE-MATCH]], any time" in done.stdout
    assert "   I'm up for a [[cage match]] if he is lol" in done.stdout
    assert "@elonmusk on X · 2023-06-21 02:00 UTC · x:1" in done.stdout
    assert done.stdout.rstrip().endswith("3 post(s) hit, of 6 stored post(s) read, newest first")


def test_rules_try_oldest_first_reverses_the_order(history):
    done = ringside(history, "rules", "try", '"cage match"', "--oldest-first")
    assert heads(done.stdout) == ["x:1", "x:5", "threads:6"]
    assert done.stdout.rstrip().endswith("oldest first")


def on_a_terminal(config: Path, *args: str, **environment: str) -> str:
    """What a command prints to a real terminal (a pseudo-terminal), as text."""
    leader, follower = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"} | environment
    with os.fdopen(leader, "rb", buffering=0) as screen:
        done = subprocess.run(
            [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), *args],
            cwd=ROOT,
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
        os.close(follower)
        assert done.returncode == 0, done.stderr
        chunks = []
        while True:
            try:
                chunk = screen.read(65536)
            except OSError:  # EIO: the terminal is closed and read to its end
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_rules_try_on_a_terminal_marks_the_matched_words_in_bold_unless_no_color_is_set(history):
    bold = on_a_terminal(history, "rules", "try", "bees")
    assert "Nicolas Cage fights \x1b[1mbees\x1b[0m in his new film" in bold
    plain = on_a_terminal(history, "rules", "try", "bees", NO_COLOR="1")
    assert "Nicolas Cage fights [[bees]] in his new film" in plain and "\x1b" not in plain


def test_rules_try_folds_accents_and_reads_near_as_the_rules_do(history):
    done = ringside(history, "rules", "try", "pret NEAR/4 cage")
    assert heads(done.stdout) == ["x:3"]
    assert "Je suis [[prêt]] pour un combat en [[cage]] lol" in done.stdout


def test_rules_try_since_a_duration_or_a_date_keeps_only_posts_from_then(history):
    assert heads(ringside(history, "rules", "try", "cage", "--since", "7d").stdout) == ["threads:6", "x:5"]
    since = ringside(history, "rules", "try", "cage", "--since", "2023-06-21T03:00:00Z").stdout
    assert heads(since) == ["threads:6", "x:5", "x:4", "x:3"]
    assert "posted since 2023-06-21 03:00 UTC" in since


def test_rules_try_account_filters_by_handle_on_any_platform_or_by_platform_and_handle(history):
    assert heads(ringside(history, "rules", "try", "cage OR location", "--account", "@zuck").stdout) == [
        "threads:6",
        "instagram:2",
    ]
    assert heads(ringside(history, "rules", "try", "cage", "--account", "threads:zuck").stdout) == [
        "threads:6"
    ]
    both = ringside(history, "rules", "try", "cage", "--account", "filmfan", "--account", "x:elonmusk")
    assert heads(both.stdout) == ["x:5", "x:4", "x:1"]
    assert "by filmfan, x:elonmusk" in both.stdout


def test_rules_try_limit_shows_that_many_and_says_how_many_more_hit(history):
    done = ringside(history, "rules", "try", "cage", "--limit", "2")
    assert heads(done.stdout) == ["threads:6", "x:5"]
    assert done.stdout.rstrip().endswith(
        "5 post(s) hit, of 6 stored post(s) read, newest first; 3 more not shown (--limit 2)"
    )


def test_rules_try_never_prints_a_posts_control_characters(history):
    done = ringside(history, "rules", "try", "off")
    assert "The cage match is [[off]] [2J" in done.stdout
    assert "\x1b" not in done.stdout


def test_rules_try_json_gives_each_post_with_spans_into_its_text(history):
    done = ringside(history, "rules", "try", '"cage match" OR octagon', "--json", "--limit", "2")
    document = json.loads(done.stdout)
    assert (document["read"], document["matched"], document["shown"], document["more"]) == (6, 3, 2, 1)
    assert [post["key"] for post in document["posts"]] == ["threads:6", "x:5"]
    assert document["posts"][0]["text"] == "The cage match is off \x1b[2J"  # JSON keeps every character
    marked = [post["text"][start:end] for post in document["posts"] for start, end, _ in post["spans"]]
    assert marked == ["cage match", "CAGE-MATCH"]


def test_rules_try_a_bad_query_is_one_line_naming_the_column_and_the_text_there(history):
    done = ringside(history, "rules", "try", '"cage match" OR (octagon')
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "ringside: error: rules try: query column 17: expected ')' to close the '(' here; "
        "the query from there: '(octagon'\n"
    )


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("--since", "lately", "--since: expected a duration"), ("--account", "x:", "--account 'x:': expected")],
)
def test_rules_try_a_bad_filter_is_one_line_naming_the_option(history, option, value, says):
    done = ringside(history, "rules", "try", "cage", option, value)
    assert done.returncode == 2
    assert done.stderr.startswith(f"ringside: error: {says}") and done.stderr.count("\n") == 1


# -- rules diff ------------------------------------------------------------------------------------------


def rules_dir(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "new-rules"
    directory.mkdir(parents=True)
    (directory / "mine.toml").write_text(text, encoding="utf-8")
    return directory


EDITED = """
[[rules]]
id = "cage-fight"
category = "challenge"
severity = 4
query = '"cage match"'

[[rules]]
id = "bees"
category = "taunt"
query = 'bees'
"""


def diff_rows(output: str) -> dict[str, list[str]]:
    """The table of `rules diff`: rule id -> status, before, now, gained, lost, same."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rule "))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("total:"):
            return rows
        rule, *cells = line.split()
        rows[rule] = cells
    raise AssertionError(f"no total line in {output!r}")


def test_rules_diff_of_the_running_rules_against_their_stored_hits_changes_nothing(tmp_path, write_config):
    """The demo has challenges, responses, taunts and a veto: judged as the service judges, the same rules
    find exactly the hits it stored."""
    config = write_config(replay_config(DEMO_FEED, tmp_path / "ringside.db"))
    assert ringside(config, "once").returncode == 0
    done = ringside(config, "rules", "diff")
    assert done.returncode == 0, done.stderr
    rows = diff_rows(done.stdout)
    assert {cells[0] for cells in rows.values()} == {"same"}
    assert sum(int(cells[1]) for cells in rows.values()) >= 9  # every stored hit is found again
    assert "total: 0 hit(s) gained, 0 lost" in done.stdout


def test_rules_diff_counts_hits_gained_and_lost_per_rule_against_the_stored_hits(history, tmp_path):
    done = ringside(history, "rules", "diff", str(rules_dir(tmp_path, EDITED)))
    assert done.returncode == 0, done.stderr
    rows = diff_rows(done.stdout)
    # cage-fight stored x:1, x:3 (combat en cage), x:5, threads:6; "cage match" alone loses the French post
    assert rows["cage-fight"] == ["changed", "4", "3", "0", "1", "3"]
    assert rows["bees"] == ["added", "0", "1", "1", "0", "0"]
    assert rows["accept-challenge"] == ["removed", "2", "0", "0", "2", "0"]  # Send Me Location, je suis prêt
    assert "total: 1 hit(s) gained, 3 lost, 3 unchanged; rules: 1 added, 1 removed, 1 changed" in done.stdout
    lost = done.stdout.split("\ncage-fight lost 1:\n", 1)[1]
    assert lost.startswith("   @actu_tech_fr on X · 2023-06-21 04:00 UTC · x:3\n")
    assert "Je suis prêt pour un [[combat en cage]] lol" in lost  # the stored hit's spans
    gained = done.stdout.split("\nbees gained 1:\n", 1)[1]
    assert "Nicolas Cage fights [[bees]] in his new film, with [[bees]]" in gained


def test_rules_diff_against_another_directory_compares_two_rule_sets(history, tmp_path):
    done = ringside(
        history, "rules", "diff", str(rules_dir(tmp_path, EDITED)), "--against", str(DEFAULT_RULES)
    )
    rows = diff_rows(done.stdout)
    assert rows["cage-fight"] == ["changed", "4", "3", "0", "1", "3"]
    assert rows["bees"] == ["added", "0", "1", "1", "0", "0"]
    assert rows["dare"] == ["removed", "0", "0", "0", "0", "0"]  # a rule of the old set, hitting nothing
    assert f"against the rules in {DEFAULT_RULES}" in done.stdout


def test_rules_diff_json_has_the_counts_and_examples_of_each_rule(history, tmp_path):
    done = ringside(history, "rules", "diff", str(rules_dir(tmp_path, EDITED)), "--json", "--examples", "1")
    changes = {change["rule"]: change for change in json.loads(done.stdout)["changes"]}
    assert (changes["cage-fight"]["lost"], changes["cage-fight"]["unchanged"]) == (1, 3)
    assert [post["key"] for post in changes["bees"]["gained_examples"]] == ["x:4"]


def test_rules_diff_since_and_account_narrow_the_posts_read(history, tmp_path):
    done = ringside(history, "rules", "diff", str(rules_dir(tmp_path, EDITED)), "--since", "7d")
    assert diff_rows(done.stdout)["cage-fight"] == ["same", "2", "2", "0", "0", "2"]
    assert "2 stored post(s) read posted since" in done.stdout
    by = ringside(
        history, "rules", "diff", str(rules_dir(tmp_path / "again", EDITED)), "--account", "filmfan"
    )
    assert diff_rows(by.stdout)["bees"] == ["added", "0", "1", "1", "0", "0"]


def test_rules_diff_reads_every_version_of_an_edited_post_as_the_service_keeps_hits(
    tmp_path, write_config, write_feed
):
    """A hit stays on the version it matched; the edit that no longer matches is no hit lost."""
    posts = [
        {"platform": "x", "id": "1", "author": "a", "created_at": "2023-06-21T02:58:00Z", "text": text}
        for text in ("I'm up for a cage match", "I'm up for a chess match")
    ]
    config = write_config(replay_config(write_feed(posts), tmp_path / "ringside.db"))
    assert ringside(config, "once").returncode == 0
    assert diff_rows(ringside(config, "rules", "diff").stdout)["cage-fight"] == [
        "same",
        "1",
        "1",
        "0",
        "0",
        "1",
    ]
    assert "0 post(s) hit" in ringside(config, "rules", "try", '"cage match"').stdout  # current text only


def test_rules_diff_of_a_directory_without_rules_is_one_line_naming_it(history, tmp_path):
    (tmp_path / "empty").mkdir()
    done = ringside(history, "rules", "diff", str(tmp_path / "empty"))
    assert done.returncode == 2
    assert done.stderr == f"ringside: error: {tmp_path / 'empty'}: no rule files (*.toml) found\n"


# -- the store's batches ---------------------------------------------------------------------------------


def test_post_batches_give_every_post_once_in_order_across_batches_of_posts_posted_at_the_same_time(store):
    moment = datetime(2023, 6, 21, tzinfo=UTC)
    posts = tuple(Post("x", str(i), "a", f"post {i}", moment + timedelta(minutes=i // 3)) for i in range(10))
    store.save_poll("x", "f", moment, Fetch(posts, None, len(posts)), [], [])
    newest = [s.post.key for batch in store.post_batches(batch_size=2) for s in batch]
    oldest = [s.post.key for batch in store.post_batches(newest_first=False, batch_size=4) for s in batch]
    assert sorted(newest) == sorted(p.key for p in posts) and len(newest) == 10
    assert oldest == [p.key for p in posts]
    assert [len(batch) for batch in store.post_batches(batch_size=3)] == [3, 3, 3, 1]
    assert newest[:3] == ["x:9", "x:8", "x:7"]


# -- the ringside command --------------------------------------------------------------------------------


def installed_ringside() -> Path:
    program = Path(sys.executable).parent / "ringside"
    assert program.is_file(), f"{program} is missing: install Ringside (make .venv/.installed-test)"
    return program


def test_the_ringside_command_answers_help_under_its_own_name(tmp_path):
    done = subprocess.run(
        [str(installed_ringside()), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: ringside ")
    assert "rules" in done.stdout


def test_ringside_report_prints_what_run_bot_report_prints(history):
    ours = ringside(history, "report", "top-rules", program=installed_ringside())
    theirs = ringside(history, "report", "top-rules")
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout and "cage-fight" in ours.stdout


def test_ringside_names_itself_in_a_bad_argument_error(history):
    done = ringside(history, "rules", "try", program=installed_ringside())
    assert done.returncode == 2
    assert done.stderr == "ringside: error: rules try: the following arguments are required: query\n"
