"""Reports from the command line, the same as the views any SQLite client reads; search, prune, Datasette."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from typing import TYPE_CHECKING

import pytest
import yaml

import run_bot
from storage import Store
from storage.reports import REPORTS
from tests.conftest import DEMO_FEED, ROOT, replay_config
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
    assert json.loads(out) == rows
    if name != "alerts":
        assert rows, f"the demo should give {name} something to show"


def test_report_list_names_each_report_with_a_line(capsys):
    code, out, _ = cli(capsys, "report", "--list")
    assert code == 0 and len(out.strip().splitlines()) == len(REPORTS)
    assert out.startswith("hits-by-day    Hits per day")


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
    assert row["x_posts_read"] == 0 and row["x_spend_usd"] == 0


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
