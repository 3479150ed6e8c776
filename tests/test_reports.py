"""Reports from the command line, the same as the views any SQLite client reads; search, prune, Datasette."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import wcwidth
import yaml

import run_bot
from bot.timeutil import iso, utcnow
from storage import Store
from storage.reports import REPORTS
from tests.conftest import DEMO_FEED, ROOT, post_record, replay_config
from tests.test_exchanges import PEOPLE

if TYPE_CHECKING:
    from datasette.app import Datasette

PEOPLE_TOML = """
[[people]]
id = "musk"
name = "Elon Musk"
accounts = ["x:elonmusk"]

[[people]]
id = "zuck"
name = "Mark Zuckerberg"
accounts = ["instagram:zuck", "threads:zuck"]

[[rivalries]]
people = ["musk", "zuck"]
"""


@pytest.fixture
def demo_db(tmp_path, write_config, capsys):
    """The demo feed run once into a database; the settings file that names it."""
    config = write_config(replay_config(DEMO_FEED, tmp_path / "ringside.db") + PEOPLE_TOML)
    assert run_bot.main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    assert PEOPLE.people  # the same people as the exchange tests
    return config, tmp_path / "ringside.db"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run_bot.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", list(REPORTS))
def test_every_report_agrees_with_its_view_in_the_database(demo_db, capsys, name):
    config, database = demo_db
    code, out, _ = cli(capsys, "--config", str(config), "report", name, "--format", "json", "--limit", "1000")
    assert code == 0
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(f"select * from {REPORTS[name].view}")]
    for row in rows:  # the view holds JSON text where the report gives a list
        row.update({column: json.loads(row[column]) for column in REPORTS[name].json_columns})
    printed = json.loads(out)
    if REPORTS[name].chart:  # a report by day adds the days and series without hits, as zeros
        chart = REPORTS[name].chart
        assert {row[chart.value] for row in printed if row not in rows} <= {0}
        printed = [row for row in printed if row in rows]
    assert printed == rows
    if name not in ("alerts", "quarantine", "x-spend"):  # the demo has no broken record and reads no X
        assert rows, f"the demo should give {name} something to show"


def test_report_list_names_each_report_with_a_line(capsys):
    code, out, _ = cli(capsys, "report", "--list")
    assert code == 0 and len(out.strip().splitlines()) == len(REPORTS)
    assert out.split()[:4] == ["hits-by-day", "Hits", "per", "day"]


def test_latest_hits_as_a_table_is_aligned_with_text_and_link(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(capsys, "--config", str(config), "report", "latest-hits", "--limit", "2")
    header, rule, first, _ = out.rstrip("\n").split("\n")
    assert header.split() == [
        "created_at",
        "post_key",
        "author",
        "rule",
        "category",
        "severity",
        "probability",
        "text",
        "url",
    ]
    assert set(rule) == {"-", " "}
    assert "Zuck is a chicken" in first and first.endswith(
        "https://x.com/elonmusk/status/1671370010000000020"
    )
    assert header.index("text") == first.index("Zuck is a chicken")


def test_csv_is_clean_for_pipes_and_filters_apply(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(
        capsys,
        "--config",
        str(config),
        "report",
        "top-accounts",
        "--format",
        "csv",
        "--since",
        "2023-06-21",
        "--until",
        "2023-06-22",
        "--account",
        "@elonmusk",
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["author"], r["hits"]) for r in rows] == [("elonmusk", "2")]


def test_source_health_shows_polls_and_x_spend(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(capsys, "--config", str(config), "report", "source-health", "--format", "json")
    (row,) = json.loads(out)
    assert (row["source"], row["polls"], row["errors"], row["fetched"], row["new_posts"]) == (
        "demo",
        1,
        0,
        28,
        28,
    )
    assert row["x_posts_read"] == 0 and row["x_spend_today_usd"] is None and row["x_budget_day_usd"] is None


def test_the_exchanges_report_shows_the_model_case(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(capsys, "--config", str(config), "report", "exchanges", "--format", "json")
    (row,) = json.loads(out)
    assert (row["turns"], row["first_text"], row["last_text"]) == (
        3,
        "I'm up for a cage match if he is lol",
        "Vegas Octagon",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "hits-by-day", "--since", "last tuesday"], "--since: expected a duration such as 7d"),
        (["report", "nope"], "report 'nope': no such report; run_bot.py report --list names them"),
        (["search", "cage AND ("], "search 'cage AND (': fts5: syntax error"),
        (["prune", "--older-than", "old"], "--older-than: expected a duration"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(demo_db, capsys, args, message):
    config, _ = demo_db
    code, _, err = cli(capsys, "--config", str(config), *args)
    assert code == 2 and err.startswith(f"ringside: error: {message}") and len(err.strip().splitlines()) == 1


def test_a_missing_or_foreign_database_is_one_line_and_exit_code_2(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "none.db"))
    code, _, err = cli(capsys, "--config", str(config), "report", "categories")
    assert code == 2 and "none.db: no database here" in err and not (tmp_path / "none.db").exists()
    with sqlite3.connect(tmp_path / "none.db") as conn:
        conn.execute("create table invoices (id integer)")
    code, _, err = cli(capsys, "--config", str(config), "report", "categories")
    assert code == 2 and "not a Ringside database" in err


def test_a_value_from_the_command_line_never_becomes_sql(demo_db, capsys):
    config, database = demo_db
    code, out, _ = cli(
        capsys,
        "--config",
        str(config),
        "report",
        "top-accounts",
        "--format",
        "json",
        "--account",
        "x' OR 1=1 --",
    )
    assert code == 0 and json.loads(out) == []
    assert sqlite3.connect(database).execute("select count(*) from posts").fetchone() == (28,)


def test_full_text_search_finds_phrases_near_words_and_folds_accents(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(capsys, "--config", str(config), "search", "cage NEAR match", "--format", "json")
    assert [r["author"] for r in json.loads(out)] == ["elonmusk"]
    _, out, _ = cli(capsys, "--config", str(config), "search", "pret", "--format", "json")
    assert "Je suis **prêt**" in json.loads(out)[0]["text"]
    _, out, _ = cli(
        capsys, "--config", str(config), "search", "cage", "--since", "2023-08-01", "--format", "json"
    )
    assert [r["author"] for r in json.loads(out)] == ["actu_tech_fr"]


def test_a_search_query_longer_than_the_limit_is_refused_in_one_short_line(store):
    from storage.reports import SEARCH_MAX_QUERY, QueryError

    with pytest.raises(QueryError) as error:
        store.search("a" * 40_000)
    message = str(error.value)
    assert message == f"search: the query is 40,000 characters long; at most {SEARCH_MAX_QUERY:,}"


def test_a_long_word_with_near_is_still_rewritten_for_fts5():
    from storage.reports import SEARCH_MAX_QUERY, fts_query

    word = "a" * (SEARCH_MAX_QUERY - 20)
    assert fts_query(f"{word} NEAR/3 cage") == f"NEAR({word} cage, 3)"
    assert fts_query(f"x{word} cage NEAR match") == f"x{word} NEAR(cage match, 10)"


def test_a_quoted_phrase_beside_near_stays_one_phrase(demo_db, capsys):
    config, _ = demo_db
    code, out, err = cli(
        capsys, "--config", str(config), "search", '"send me" NEAR/2 location', "--format", "json"
    )
    assert code == 0, err
    assert {row["author"] for row in json.loads(out)} == {"zuck", "sf_techmeetups"}


def test_prune_removes_old_posts_without_hits_and_keeps_hits_alerts_and_exchanges(demo_db, capsys):
    config, database = demo_db
    before = Store.open(database)
    kept = before.counts()
    turns = before.db.execute("select count(*) from exchange_turns").fetchone()
    with_hits = before.db.execute("select count(distinct post_key) from hits").fetchone()[0]
    before.close()
    code, out, _ = cli(capsys, "--config", str(config), "prune", "--older-than", "90d", "--vacuum")
    assert code == 0 and out.startswith(f"removed {kept['posts'] - with_hits} post(s) without a hit")
    after = Store.open(database)
    assert after.counts() == {**kept, "posts": with_hits}
    assert after.db.execute("select count(*) from exchange_turns").fetchone() == turns
    assert after.db.execute(
        "select count(*) from posts p where not exists (select 1 from hits h where h.post_key = p.key)"
    ).fetchone() == (0,)
    assert after.search("Starship").rows == []  # the full-text index followed the deletes
    after.close()


def readme_datasette_command() -> list[str]:
    """The Datasette command line the README gives, split into words."""
    (line,) = [
        line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("**Datasette**")
    ]
    return line.split("`")[3].split()


def readme_datasette(database) -> Datasette:
    """Datasette as the README's command starts it (metadata and plugins directory), on `database`."""
    from datasette.app import Datasette

    words = readme_datasette_command()
    metadata = yaml.safe_load((ROOT / words[words.index("-m") + 1]).read_text())
    plugins = ROOT / words[words.index("--plugins-dir") + 1]
    return Datasette([str(database)], metadata=metadata, plugins_dir=str(plugins))


def test_datasette_serves_every_canned_query(demo_db):
    _, database = demo_db
    metadata = yaml.safe_load((ROOT / "config" / "datasette.yml").read_text())
    datasette = readme_datasette(database)

    async def fetch_all() -> dict[str, dict]:
        results = {}
        for name in metadata["databases"]["ringside"]["queries"]:
            params = "&query=cage" if name == "search_posts" else ""
            response = await datasette.client.get(f"/ringside/{name}.json?_shape=objects{params}")
            assert response.status_code == 200, (name, response.text[:300])
            results[name] = response.json()
        response = await datasette.client.get("/ringside/posts.json?_facet=platform")
        assert response.status_code == 200
        return results

    results = asyncio.run(fetch_all())
    assert results["exchanges_report"]["rows"][0]["turns"] == 3
    assert results["search_posts"]["rows"]


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31mI'm up for a cage match\r\tif he is lol"


@pytest.fixture
def hostile_db(tmp_path, write_config, write_feed, capsys):
    """A database holding one post whose text carries terminal escape sequences."""
    feed = write_feed([post_record("1", HOSTILE)])
    config = write_config(replay_config(feed, tmp_path / "hostile.db"))
    assert run_bot.main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    return config


def control_characters(text: str) -> set[str]:
    return {c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"}


@pytest.mark.parametrize(
    "args",
    [
        ["report", "latest-hits"],
        ["report", "latest-hits", "--format", "csv"],
        ["search", "cage"],
        ["search", "cage", "--format", "csv"],
    ],
)
def test_reports_and_search_never_print_terminal_control_characters(hostile_db, capsys, args):
    code, out, _ = cli(capsys, "--config", str(hostile_db), *args)
    assert code == 0 and "up for a" in out
    assert control_characters(out) == set()


def test_json_output_keeps_the_text_exactly_as_posted(hostile_db, capsys):
    _, out, _ = cli(capsys, "--config", str(hostile_db), "report", "latest-hits", "--format", "json")
    assert json.loads(out)[0]["text"] == HOSTILE and control_characters(out) == set()


def test_a_reader_that_stops_early_gets_no_traceback(demo_db):
    config, _ = demo_db
    command = [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "report", "latest-hits"]
    process = subprocess.Popen(
        [*command, "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    process.stdout.close()  # like `| head -0`: nobody reads what it prints
    err = process.stderr.read().decode()
    assert process.wait() == 141 and err == ""


def test_tables_align_columns_by_their_width_on_screen_with_emoji_and_cjk(
    tmp_path, write_config, write_feed, capsys
):
    feed = write_feed(
        [
            post_record("1", "cage match 🥊🥊🥊 tonight", url="https://x.com/a/1"),
            post_record("2", "cage match 今夜の試合", author="相撲", url="https://x.com/b/2"),
            post_record("3", "cage match tonight", url="https://x.com/c/3"),
        ]
    )
    config = write_config(replay_config(feed, tmp_path / "wide.db"))
    assert run_bot.main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    _, out, _ = cli(capsys, "--config", str(config), "report", "latest-hits")
    lines = out.rstrip("\n").split("\n")
    url_columns = {wcwidth.wcswidth(line[: line.index("https://")]) for line in lines if "https://" in line}
    assert len(lines) == 5 and len(url_columns) == 1


def test_the_exchanges_report_gives_people_as_a_list_in_json(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(capsys, "--config", str(config), "report", "exchanges", "--format", "json")
    assert json.loads(out)[0]["people"] == ["musk", "zuck"]
    _, out, _ = cli(capsys, "--config", str(config), "report", "exchanges")
    assert "musk, zuck" in out


@pytest.mark.parametrize("name", ["top-accounts", "latest-hits", "alerts", "exchanges"])
@pytest.mark.parametrize("pattern", ["el%", "elonmus_", "%", "mus%"])
def test_an_account_is_matched_literally_never_as_a_pattern(demo_db, capsys, name, pattern):
    config, _ = demo_db
    code, out, _ = cli(
        capsys, "--config", str(config), "report", name, "--format", "json", "--account", pattern
    )
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize("account", ["elonmusk", "@ElonMusk", "x:elonmusk", "X:@elonmusk"])
def test_report_account_takes_every_form_rules_take(demo_db, capsys, account):
    config, _ = demo_db
    _, out, _ = cli(
        capsys, "--config", str(config), "report", "top-accounts", "--format", "json", "--account", account
    )
    assert [(r["platform"], r["author"], r["hits"]) for r in json.loads(out)] == [("x", "elonmusk", 3)]
    _, out, _ = cli(
        capsys, "--config", str(config), "report", "exchanges", "--format", "json", "--account", account
    )
    assert [r["people"] for r in json.loads(out)] == [["musk", "zuck"]]


@pytest.mark.parametrize(
    ("account", "exchanges"), [("musk", 1), ("instagram:elonmusk", 0), ("x:zuck", 0), ("threads:zuck", 0)]
)
def test_exchanges_are_found_by_person_id_or_by_an_account_that_took_a_turn(
    demo_db, capsys, account, exchanges
):
    config, _ = demo_db
    _, out, _ = cli(
        capsys, "--config", str(config), "report", "exchanges", "--format", "json", "--account", account
    )
    assert len(json.loads(out)) == exchanges


def test_an_account_on_another_platform_matches_nothing(demo_db, capsys):
    config, _ = demo_db
    _, out, _ = cli(
        capsys,
        "--config",
        str(config),
        "report",
        "latest-hits",
        "--format",
        "json",
        "--account",
        "instagram:elonmusk",
    )
    assert json.loads(out) == []


def test_source_health_finds_a_batch_feed_by_its_name_colon_and_all(store):
    started = datetime(2026, 11, 1, tzinfo=UTC)
    store.save_failed_poll("x", "batch:elonmusk,finkd", started, "X server error (503)", platform="x")
    store.save_failed_poll("x", "elonmusk", started, "X server error (503)", platform="x")
    feeds = [row[1] for row in store.report("source-health", account="batch:elonmusk,finkd").rows]
    assert feeds == ["batch:elonmusk,finkd"]
    assert [row[1] for row in store.report("source-health", account="x:elonmusk").rows] == ["elonmusk"]


def test_the_readme_datasette_command_runs_from_the_virtual_environment():
    assert readme_datasette_command()[0] == ".venv/bin/datasette"


def test_the_datasette_search_page_loads_without_an_error_before_any_query(demo_db):
    _, database = demo_db
    datasette = readme_datasette(database)

    async def first_load() -> tuple[int, str, dict]:
        page = await datasette.client.get("/ringside/search_posts")
        answer = await datasette.client.get("/ringside/search_posts.json?_shape=objects&query=")
        return page.status_code, page.text, answer.json()

    status, html, answer = asyncio.run(first_load())
    assert status == 200 and "syntax error" not in html
    assert answer["ok"] and answer["rows"] == []


def test_the_datasette_search_reads_near_as_the_cli_does(demo_db, capsys):
    config, database = demo_db
    datasette = readme_datasette(database)
    code, out, _ = cli(capsys, "--config", str(config), "search", "cage NEAR/3 match", "--format", "json")
    assert code == 0
    from_cli = {row["url"] for row in json.loads(out)}

    async def search() -> dict:
        answer = await datasette.client.get(
            "/ringside/search_posts.json?_shape=objects&query=cage%20NEAR/3%20match"
        )
        return answer.json()

    answer = asyncio.run(search())
    assert answer.get("ok", True), answer
    assert from_cli and {row["url"] for row in answer["rows"]} == from_cli


def test_every_search_example_in_the_readme_finds_posts_in_the_demo_data(demo_db, capsys):
    config, _ = demo_db
    examples = {
        line.split("search '")[1].split("'")[0]
        for line in (ROOT / "README.md").read_text().splitlines()
        if "run_bot.py search '" in line
    }
    assert examples
    for query in examples:
        code, out, _ = cli(capsys, "--config", str(config), "search", query, "--format", "json")
        assert code == 0 and json.loads(out), query


def test_source_health_names_each_feeds_platform_and_until_when_it_is_rate_limited(store):
    started = datetime(2026, 11, 1, tzinfo=UTC)
    until = utcnow() + timedelta(hours=1)
    store.save_failed_poll(
        "fedi", "a@mastodon.social", started, "rate limited", platform="mastodon", paused_until=until
    )
    store.save_failed_poll("press", "https://example.com/feed.xml", started, "gone (404)", platform="rss")
    table = store.report("source-health")
    rows = {row[1]: dict(zip(table.columns, row, strict=True)) for row in table.rows}
    assert rows["a@mastodon.social"]["platform"] == "mastodon"
    assert rows["a@mastodon.social"]["paused_until"] == iso(until)
    assert rows["https://example.com/feed.xml"]["platform"] == "rss"
    assert rows["https://example.com/feed.xml"]["paused_until"] is None
