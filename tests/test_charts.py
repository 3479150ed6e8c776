"""Hits per day per category and per rivalry: bars on a terminal, rows with the empty days for pipes, and the
charts Datasette draws (datasette-dashboards) from the same views."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import os
import pty
import sqlite3
import struct
import subprocess
import sys
import termios
from collections import Counter
from datetime import timedelta
from urllib.parse import quote

import pytest
import wcwidth
import yaml

import run_bot
from bot.charts import GLYPHS, OTHER, THIN, DayCounts, draw_bars
from bot.timeutil import utcnow
from tests.conftest import ROOT, replay_config
from tests.test_reports import PEOPLE_TOML, readme_datasette

RUN_BOT = str(ROOT / "run_bot.py")
# Musk challenges on X, Zuckerberg answers on Instagram the same day (one exchange: the rivalry), a fan who is
# no rival challenges three days later, and Musk taunts: the exchange's third turn. Nothing on the 22nd, 23rd.
FEED = [
    ("x", "100", "elonmusk", "I'm up for a cage match if he is lol", "2023-06-21T02:58:00Z"),
    ("instagram", "Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z"),
    ("x", "200", "fan1", "I'm up for a cage match if he is lol", "2023-06-24T01:00:00Z"),
    ("x", "101", "elonmusk", "Zuck is a chicken", "2023-06-24T02:00:00Z"),
]
DAYS = ["2023-06-21", "2023-06-22", "2023-06-23", "2023-06-24"]


@pytest.fixture
def rivalry_db(tmp_path, write_config, write_feed, capsys):
    """FEED run once through the pipeline (rules alone) into ringside.db; the settings file that names it."""
    feed = write_feed(
        [
            {"platform": platform, "id": id, "author": author, "text": text, "created_at": at}
            for platform, id, author, text, at in FEED
        ]
    )
    config = write_config(replay_config(feed, tmp_path / "ringside.db") + PEOPLE_TOML)
    assert run_bot.main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    return config, tmp_path / "ringside.db"


def hits_by_day_and_category(database) -> Counter:
    """Counted from the hits table in Python: what the report must agree with."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT p.created_at, h.category FROM hits h JOIN posts p ON p.key = h.post_key")
        return Counter((created_at[:10], category) for created_at, category in rows)


def piped(config, *args: str) -> str:
    """run_bot.py in a subprocess with stdout a pipe, as `run_bot.py ... | less` runs it."""
    done = subprocess.run(
        [sys.executable, RUN_BOT, "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment_without_a_size(),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def environment_without_a_size() -> dict[str, str]:
    # shutil.get_terminal_size reads COLUMNS before it asks the terminal
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def in_a_terminal(config, *args: str, columns: int) -> str:
    """run_bot.py in a subprocess whose stdin, stdout and stderr are a real pseudo-terminal `columns` wide;
    what it printed, with the terminal's \\r\\n read back as \\n."""
    controller, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, RUN_BOT, "--config", str(config), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
        env=environment_without_a_size(),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every end of the terminal the process held is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait() == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode().replace("\r\n", "\n")


def day_lines(out: str) -> dict[str, str]:
    return {line[:10]: line for line in out.splitlines() if line[:10] in DAYS}


def bar_of(line: str) -> str:
    return "".join(c for c in line if c in GLYPHS or c == THIN)


def test_hits_by_day_piped_gives_every_day_and_category_with_zeros_for_the_quiet_days(rivalry_db):
    config, database = rivalry_db
    rows = list(csv.reader(io.StringIO(piped(config, "report", "hits-by-day", "--format", "csv"))))
    assert rows[0] == ["day", "category", "hits"]
    counted = hits_by_day_and_category(database)
    categories = {category for _, category in counted}
    assert categories == {"challenge", "response", "taunt"}
    assert [day for day, _, _ in rows[1:]] == [day for day in DAYS for _ in categories]
    # each day as the view orders it: most hits first, then by name
    assert [category for day, category, _ in rows[1:] if day == "2023-06-24"] == [
        "challenge",
        "taunt",
        "response",
    ]
    assert {(day, category): int(hits) for day, category, hits in rows[1:]} == {
        (day, category): counted[day, category] for day in DAYS for category in categories
    }
    assert {int(hits) for day, _, hits in rows[1:] if day in ("2023-06-22", "2023-06-23")} == {0}


def test_rivalry_hits_by_day_counts_the_exchanges_turns_and_leaves_out_a_fan_who_is_no_rival(rivalry_db):
    config, _ = rivalry_db
    rows = json.loads(piped(config, "report", "rivalry-hits-by-day", "--format", "json"))
    assert rows == [
        {"day": "2023-06-21", "rivalry": "musk vs zuck", "hits": 2, "turns": 2},
        {"day": "2023-06-22", "rivalry": "musk vs zuck", "hits": 0, "turns": 0},
        {"day": "2023-06-23", "rivalry": "musk vs zuck", "hits": 0, "turns": 0},
        {"day": "2023-06-24", "rivalry": "musk vs zuck", "hits": 1, "turns": 1},  # the fan's challenge is not
    ]


def test_piped_without_a_format_a_report_by_day_is_a_plain_table_without_bars(rivalry_db):
    config, _ = rivalry_db
    out = piped(config, "report", "hits-by-day")
    assert out.splitlines()[0].split() == ["day", "category", "hits"]
    assert not set(out) & set(GLYPHS) and "2023-06-22" in out


def test_in_a_terminal_hits_by_day_draws_a_bar_a_day_scaled_to_the_width_with_a_legend(rivalry_db):
    config, _ = rivalry_db
    out = in_a_terminal(config, "report", "hits-by-day", columns=80)
    lines = out.splitlines()
    assert lines[0] == "Hits per day (of the post) per category, 2023-06-21 to 2023-06-24"
    assert lines[1] == "█ challenge  ▓ response  ▒ taunt"  # the most hits first
    assert max(wcwidth.wcswidth(line) for line in lines) <= 79
    days = day_lines(out)
    assert list(days) == DAYS
    widest = 79 - len("2023-06-21 ") - len(" 2")  # the two days of 2 hits fill what the day and total leave
    assert days["2023-06-21"] == "2023-06-21 " + "█" * (widest // 2) + "▓" * (widest // 2) + " 2"
    assert days["2023-06-24"] == "2023-06-24 " + "█" * (widest // 2) + "▒" * (widest // 2) + " 2"
    assert days["2023-06-22"] == "2023-06-22  0" and days["2023-06-23"] == "2023-06-23  0"
    assert lines[-1] == f"scale: the longest bar, 2 hits, is {widest} columns wide"


def test_a_wider_terminal_gets_longer_bars(rivalry_db):
    config, _ = rivalry_db
    narrow = day_lines(in_a_terminal(config, "report", "rivalry-hits-by-day", columns=60))
    wide = day_lines(in_a_terminal(config, "report", "rivalry-hits-by-day", columns=140))
    assert len(bar_of(narrow["2023-06-21"])) == 59 - len("2023-06-21 ") - len(" 2")
    assert len(bar_of(wide["2023-06-21"])) == 139 - len("2023-06-21 ") - len(" 2")
    assert len(bar_of(wide["2023-06-24"])) * 2 == len(bar_of(wide["2023-06-21"]))  # 1 hit against 2


def test_format_table_in_a_terminal_prints_the_rows_and_since_until_bound_the_days(rivalry_db):
    config, _ = rivalry_db
    quiet_days = ["--since", "2023-06-22", "--until", "2023-06-24"]
    out = in_a_terminal(config, "report", "hits-by-day", "--format", "table", *quiet_days, columns=80)
    assert out.splitlines()[0].split() == ["day", "category", "hits"]
    # no hit in the range: no category to give a zero to
    assert out.splitlines()[-1] == "(no rows)"
    bars = in_a_terminal(config, "report", "hits-by-day", *quiet_days, columns=80)
    assert list(day_lines(bars)) == ["2023-06-22", "2023-06-23"] and "no hits on these days" in bars


def test_format_bars_on_a_report_that_is_not_by_day_is_refused_in_one_line(rivalry_db, capsys):
    config, _ = rivalry_db
    assert run_bot.main(["--config", str(config), "report", "top-accounts", "--format", "bars"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "ringside: error: --format bars: report 'top-accounts' has no bars; "
        "hits-by-day and rivalry-hits-by-day do\n"
    )


def test_with_since_and_no_until_the_days_run_to_today():
    before = utcnow().date().isoformat()
    chart = DayCounts.from_rows(["day", "category", "hits"], [], since=utcnow() - timedelta(days=2))
    after = utcnow().date().isoformat()
    assert len(chart.days) == 3 and chart.days[-1] in (before, after) and chart.rows() == []


def test_a_day_of_few_hits_beside_a_busy_one_still_shows_a_mark():
    rows = [("2026-01-01", "challenge", 1000), ("2026-01-02", "challenge", 1)]
    chart = DayCounts.from_rows(["day", "category", "hits"], rows)
    lines = draw_bars("t", chart, width=60)
    assert lines[3] == f"2026-01-02 {THIN} 1"
    assert len(bar_of(lines[2])) == 59 - len("2026-01-01 ") - len(" 1000")


def test_series_past_the_sixth_share_one_fill_named_other():
    rows = [("2026-01-01", f"c{n}", 10 - n) for n in range(8)]
    lines = draw_bars("t", DayCounts.from_rows(["day", "category", "hits"], rows), width=200)
    assert lines[1] == f"█ c0  ▓ c1  ▒ c2  ░ c3  ▚ c4  ▞ {OTHER} (3)"
    width = 199 - len("2026-01-01 ") - len(" 52")  # 52 hits in all; c0 to c4 end at 40
    assert bar_of(lines[2]).count("▞") == width - round(40 * width / 52)


def chart_in_page(page: str, slug: str) -> dict:
    """The chart the dashboard page hands its script: renderChart('slug', {...}, ...)."""
    start = page.index(f"renderChart('{slug}', ") + len(f"renderChart('{slug}', ")
    chart, _ = json.JSONDecoder().raw_decode(page[start:])
    return chart


def test_datasette_draws_the_dashboard_with_its_own_vega_scripts_and_the_charts_query_the_views(rivalry_db):
    _, database = rivalry_db
    datasette = readme_datasette(database)

    async def load() -> tuple:
        page = await datasette.client.get("/-/dashboards/hits-by-day?since=2023-06-22")
        script = await datasette.client.get("/-/static-plugins/datasette_dashboards/vega-lite.min.js")
        charts = {slug: chart_in_page(page.text, slug) for slug in ("by-category", "by-rivalry")}
        data = {}
        for slug, chart in charts.items():  # as the page's script asks for them
            url = f"/{chart['db']}.json?sql={quote(chart['query'])}&since=2023-06-22&_shape=objects"
            data[slug] = (await datasette.client.get(url)).json()
        return page, script, charts, data

    page, script, charts, data = asyncio.run(load())
    assert page.status_code == 200 and script.status_code == 200 and len(script.content) > 100_000
    assert '<script src="/-/static-plugins/datasette_dashboards/vega-lite.min.js">' in page.text
    assert '<script src="http' not in page.text  # every script from this Datasette: nothing from a CDN
    assert charts["by-category"]["library"] == "vega-lite"
    assert charts["by-category"]["display"]["encoding"]["color"]["field"] == "category"
    assert data["by-category"]["rows"] == [
        {"day": "2023-06-24", "category": "challenge", "hits": 1},
        {"day": "2023-06-24", "category": "taunt", "hits": 1},
    ]
    assert data["by-rivalry"]["rows"] == [{"day": "2023-06-24", "rivalry": "musk vs zuck", "hits": 1}]


def test_the_canned_queries_give_the_views_rows_and_link_to_the_dashboard(rivalry_db):
    _, database = rivalry_db
    datasette = readme_datasette(database)

    async def load() -> dict:
        answers = {}
        for name in ("hits_by_day", "rivalry_hits_by_day"):
            page = await datasette.client.get(f"/ringside/{name}")
            rows = (await datasette.client.get(f"/ringside/{name}.json?_shape=array")).json()
            answers[name] = (page.status_code, page.text, rows)
        return answers

    answers = asyncio.run(load())
    for status, page, _ in answers.values():
        assert status == 200 and 'href="/-/dashboards/hits-by-day"' in page
    assert answers["hits_by_day"][2] == [
        {"day": "2023-06-21", "category": "challenge", "hits": 1},
        {"day": "2023-06-21", "category": "response", "hits": 1},
        {"day": "2023-06-24", "category": "challenge", "hits": 1},
        {"day": "2023-06-24", "category": "taunt", "hits": 1},
    ]
    assert answers["rivalry_hits_by_day"][2] == [
        {"day": "2023-06-21", "rivalry": "musk vs zuck", "hits": 2, "turns": 2},
        {"day": "2023-06-24", "rivalry": "musk vs zuck", "hits": 1, "turns": 1},
    ]


def test_the_dashboard_reads_the_database_the_canned_queries_read():
    metadata = yaml.safe_load((ROOT / "config" / "datasette.yml").read_text())
    dashboard = metadata["plugins"]["datasette-dashboards"]["hits-by-day"]
    assert {chart["db"] for chart in dashboard["charts"].values()} == set(metadata["databases"])
    assert sorted(slug for row in dashboard["layout"] for slug in row) == sorted(dashboard["charts"])


def test_the_readme_shows_the_dashboard_screenshot_small_enough_to_keep_in_the_repository():
    readme = (ROOT / "README.md").read_text()
    image = ROOT / "docs" / "img" / "hits-by-day.png"
    assert "](docs/img/hits-by-day.png)" in readme and "sh docs/make-screenshot.sh" in readme
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size < 200_000
    assert (ROOT / "docs" / "make-screenshot.sh").is_file()
    assert "http://127.0.0.1:8001/-/dashboards/hits-by-day" in readme


def test_until_the_first_day_there_is_leaves_no_day_and_no_traceback(rivalry_db):
    config, _ = rivalry_db
    out = piped(config, "report", "hits-by-day", "--until", "0001-01-01", "--format", "bars")
    assert out.splitlines()[-1] == "(no days in the range)"
