"""The outbox from the command line: alerts status and retry-dead, mute and unmute; secrets kept out of
logs and the database when channels fail."""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pytest

import run_bot
from bot import logs
from config import ConfigError, load_settings
from storage import Store
from tests.conftest import DEMO_FEED, ROOT, post_record, replay_config
from tests.receiver import Answer, Receiver, status

WEBHOOK = '\n[[channels]]\nname = "hook"\ntype = "webhook"\n'


@pytest.fixture
def hooked(tmp_path, write_config, monkeypatch):
    """Settings with the console and a webhook channel whose URL carries a secret path."""

    def make(receiver: Receiver):
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url + "/T0SECRETPATH")
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-never-print-me")
        return write_config(replay_config(DEMO_FEED, tmp_path / "r.db") + WEBHOOK)

    return make


def run(capsys, *args: str) -> tuple[int, str]:
    code = run_bot.main(list(args))
    return code, capsys.readouterr().out


def test_a_channel_without_its_secret_names_the_variable_to_set(write_config):
    path = write_config(
        '[[sources]]\ntype = "replay"\npath = "' + str(DEMO_FEED) + '"\n[[channels]]\ntype = "slack"\n'
    )
    with pytest.raises(
        ConfigError, match=r"channels\[0\]\.url_env: the environment variable SLACK_WEBHOOK_URL"
    ):
        load_settings(path, environ={})


def test_a_refusing_channel_leaves_no_url_or_secret_in_logs_output_or_database(
    hooked, capsys, caplog, tmp_path
):
    with Receiver(default=status(404, "no such hook")) as receiver:
        config = hooked(receiver)
        code, out = run(capsys, "--config", str(config), "--log-level", "DEBUG", "once")
    assert code == 1  # the channel was paused
    assert "hook: alert rs1-" in caplog.text and "refused (HTTP 404: no such hook)" in caplog.text
    database = (
        (tmp_path / "r.db").read_bytes() + (tmp_path / "r.db-wal").read_bytes()
        if (tmp_path / "r.db-wal").exists()
        else (tmp_path / "r.db").read_bytes()
    )
    for secret in ("T0SECRETPATH", "whsec-never-print-me"):
        assert secret not in caplog.text and secret not in out
        assert secret.encode() not in database


def database_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_a_receiver_echoing_the_secret_path_leaves_it_in_no_log_stored_error_status_or_report(
    hooked, capsys, caplog, tmp_path
):
    with Receiver() as receiver:
        receiver.answer(
            Answer(status=404, body="no route for POST", echo_path=True),
            Answer(status=200, raw_header="a header line without a colon"),
        )
        config = hooked(receiver)
        run(capsys, "--config", str(config), "--log-level", "DEBUG", "once")
        _, status_out = run(capsys, "--config", str(config), "alerts", "status")
        _, report_out = run(capsys, "--config", str(config), "report", "alerts", "--format", "json")
    assert "Failed to parse headers (url=" in caplog.text  # urllib3's own warning, with its traceback
    assert "refused (HTTP 404: no route for POST ****)" in status_out
    assert "refused (HTTP 404: no route for POST ****)" in report_out
    for text in (caplog.text, status_out, report_out):
        assert "T0SECRETPATH" not in text and "whsec-never-print-me" not in text
    assert b"T0SECRETPATH" not in database_bytes(tmp_path / "r.db")


SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/abcdefghijklmnopqrstuvwx"


@pytest.mark.parametrize("json_lines", [False, True])
def test_every_spelling_of_a_secret_url_is_redacted_in_log_lines_and_tracebacks(json_lines):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
    handler.addFilter(logs.RedactSecrets([SLACK_URL]))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Failed to parse headers (url=%s)", SLACK_URL.replace(".com/", ".com:443/"))
        logger.warning("404: no route for %s", "/services/T0SECRET/B0SECRET/abcdefghijklmnopqrstuvwx")
        logger.warning("proxy said: %s", quote(SLACK_URL, safe=""))
        logger.warning("token alone: %s", "abcdefghijklmnopqrstuvwx")
        try:
            raise ValueError(f"cannot post to {SLACK_URL}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "T0SECRET" not in text and "abcdefghijklmnop" not in text and "hooks.slack.com" not in text
    assert text.count("****") == 5  # four lines, and the traceback of the last one
    if json_lines:
        assert "ValueError: cannot post to ****" in json.loads(text.splitlines()[-1])["exception"]


def test_a_secret_echoed_as_json_or_ending_in_a_short_token_is_redacted_too():
    from bot.redact import Redactor

    redact = Redactor(["https://hooks.example.com/api/webhooks/1234567890/s3cr3tT0k3nXY"])
    echoed = '{"path":"\\/api\\/webhooks\\/1234567890\\/s3cr3tT0k3nXY"}'  # as PHP's json_encode writes it
    assert redact(echoed) == '{"path":"****"}'
    assert redact("no hook named s3cr3tT0k3nXY") == "no hook named ****"


def test_a_receivers_control_characters_never_reach_the_log_or_the_stored_error(hooked, capsys, caplog):
    with Receiver() as receiver:
        receiver.answer(status(500, "oops \x1b]0;OWNED\x07\x1b[2J"))
        config = hooked(receiver)
        run(capsys, "--config", str(config), "once")
    err = caplog.text
    store = Store.open(load_settings(config).database)
    (error,) = store.db.execute("SELECT last_error FROM alerts WHERE channel = 'hook' LIMIT 1").fetchone()
    store.close()
    assert "oops ]0;OWNED" in error and "\x1b" not in error and "\x07" not in error
    assert "oops" in err and "\x1b" not in err and "\x07" not in err


def test_alerts_status_lists_channels_and_retry_dead_requeues_them(hooked, capsys):
    with Receiver() as receiver:
        receiver.answer(status(410, "gone"))
        config = hooked(receiver)
        run(capsys, "--config", str(config), "once")
        code, out = run(capsys, "--config", str(config), "alerts", "status")
        assert code == 0
        assert "hook             dead           1  refused (HTTP 410: gone)" in out
        assert "console          sent           5" in out
        assert run(capsys, "--config", str(config), "alerts", "retry-dead")[1] == "requeued 1 dead alert(s)\n"
        run(capsys, "--config", str(config), "once")
    store = Store.open(load_settings(config).database)
    assert store.alert_counts() == {"sent": 10}
    store.close()


def test_mute_stores_hits_without_sending_and_unmute_ends_it(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    code, out = run(capsys, "--config", str(config), "mute", "--author", "@elonmusk", "--for", "2h")
    assert code == 0 and out.startswith("author @elonmusk muted until ")
    assert run(capsys, "--config", str(config), "mute", "--list")[1].startswith("author elonmusk muted until")
    _, printed = run(capsys, "--config", str(config), "once")
    assert "@elonmusk" not in printed and "@actu_tech_fr" in printed
    assert (
        run(capsys, "--config", str(config), "unmute", "--author", "elonmusk")[1]
        == "author @elonmusk: 1 mute(s) ended\n"
    )
    store = Store.open(tmp_path / "r.db")
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status = 'muted'").fetchone() == (3,)
    store.close()


def test_a_bad_mute_duration_is_one_line_and_exit_code_2(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    assert run_bot.main(["--config", str(config), "mute", "--rule", "cage-fight", "--for", "soon"]) == 2
    assert capsys.readouterr().err.startswith("ringside: error: --for: expected a duration")


def run_once(config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_once_exits_1_while_a_channel_is_paused_and_alerts_resume_sends_what_it_kept(hooked, capsys):
    with Receiver(default=status(404, "no such hook")) as receiver:
        config = hooked(receiver)
        first = run_once(config)
        assert first.returncode == 1
        assert "once: channel hook: paused after 3 alerts in a row were refused" in first.stderr
        assert "run_bot.py alerts resume --channel hook" in first.stderr
        assert "channel hook refuses every alert" in first.stdout  # the notice, through the console
        assert run_once(config).returncode == 1  # still paused: nothing more was sent to it
        assert len(receiver.received) == 3
        assert run(capsys, "--config", str(config), "alerts", "status")[1].splitlines()[1:3] == [
            "console          sent           6  ",
            "hook             pending        5  paused after 3 alerts in a row were refused (last: refused "
            "(HTTP 404: no such hook)); fix it, then run_bot.py alerts resume --channel hook",
        ]
        receiver.default = status(200)
        assert run(capsys, "--config", str(config), "alerts", "resume", "--channel", "hook") == (
            0,
            "resumed channel hook: 5 alert(s) due now\n",
        )
        last = run_once(config)
    assert last.returncode == 0, last.stderr
    assert len(receiver.accepted()) == 5
    store = Store.open(load_settings(config).database)
    assert store.db.execute(
        "SELECT status, count(*) FROM alerts WHERE channel = 'hook' GROUP BY 1"
    ).fetchall() == [("sent", 5)]
    store.close()


def test_once_exits_1_when_an_alert_was_refused_for_good(hooked):
    with Receiver() as receiver:
        receiver.answer(status(400, "invalid_payload"))
        result = run_once(hooked(receiver))
    assert result.returncode == 1
    assert "once: 1 alert(s) refused for good or given up (dead): hook" in result.stderr


def test_once_with_a_paced_slack_channel_says_how_long_it_will_take_and_shows_progress(
    tmp_path, write_config, write_feed, monkeypatch
):
    feed = write_feed([post_record(str(i), f"cage match #{i}", author=f"fighter{i}") for i in range(12)])
    slack = '\n[[channels]]\nname = "slack"\ntype = "slack"\nmin_interval = "0.5s"\n'
    with Receiver() as receiver:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
        result = run_once(write_config(replay_config(feed, tmp_path / "r.db") + slack))
    assert result.returncode == 0, result.stderr
    assert len(receiver.accepted()) == 12
    assert "delivering 12 alert(s) to slack, one every 0.5 s: about 6 s" in result.stderr
    # 12 messages half a second apart take at least 5.5 s, more than the 5 s between two progress lines
    assert re.search(r"delivering: \d+/12 sent to slack, about \d+ s left", result.stderr)


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31mI'm up for a cage match\r\tif he is\nlol"


def control_characters(text: str) -> set[str]:
    """The control characters in `text` a terminal would act on (newline and tab are layout, not commands)."""
    return {c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"}


def test_console_alerts_strip_terminal_control_characters_and_keep_the_highlight(
    tmp_path, write_config, write_feed, capsys
):
    feed = write_feed([post_record("1", HOSTILE)])
    config = write_config(replay_config(feed, tmp_path / "r.db"))
    code, out = run(capsys, "--config", str(config), "once")
    assert code == 0
    assert control_characters(out) == set()
    assert "]0;pwned[2J31mI'm up for a **cage match**\tif he is\n   lol" in out


def test_alerts_status_strips_control_characters_from_a_receivers_error(hooked, capsys):
    hostile = status(410, "gone\x1b]0;pwned\x07\x1b[2J", Content_Type="text/plain; charset=utf-8")
    with Receiver(default=hostile) as receiver:
        config = hooked(receiver)
        run(capsys, "--config", str(config), "once")
        code, out = run(capsys, "--config", str(config), "alerts", "status")
    assert code == 0 and "refused (HTTP 410: gone]0;pwned[2J)" in out
    assert control_characters(out) == set()


@pytest.mark.parametrize("account", ["x:elonmusk", "X:@ElonMusk"])
def test_mute_takes_an_account_with_its_platform_as_rules_do(tmp_path, write_config, capsys, account):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    code, out = run(capsys, "--config", str(config), "mute", "--author", account)
    assert code == 0 and out.startswith("author x:elonmusk muted until ")
    _, printed = run(capsys, "--config", str(config), "once")
    assert "@elonmusk" not in printed and "@actu_tech_fr" in printed
    assert run(capsys, "--config", str(config), "unmute", "--author", "@elonmusk")[1] == (
        "author @elonmusk: 1 mute(s) ended\n"
    )
    store = Store.open(tmp_path / "r.db")
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status = 'muted'").fetchone() == (3,)
    store.close()


def test_a_mute_on_another_platform_leaves_the_account_alerting(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    run(capsys, "--config", str(config), "mute", "--author", "instagram:elonmusk")
    _, printed = run(capsys, "--config", str(config), "once")
    assert "@elonmusk" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mute", "--rule", "no-such-rule"], "--rule 'no-such-rule': no such rule in "),
        (["mute", "--rule", "cage-figth"], "did you mean cage-fight?"),
        (["mute", "--author", "x:"], "--author 'x:': expected an account such as elonmusk"),
        (
            ["alerts", "retry-dead", "--channel", "nosuch"],
            "--channel 'nosuch': no such channel; channels: console",
        ),
        (["report", "top-accounts", "--account", "@"], "--account '@': expected an account such as elonmusk"),
    ],
)
def test_unknown_rules_channels_and_malformed_accounts_are_refused(
    tmp_path, write_config, capsys, args, message
):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    run(capsys, "--config", str(config), "once")
    code = run_bot.main(["--config", str(config), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    store = Store.open(tmp_path / "r.db")
    assert store.mutes() == []
    store.close()


def test_an_admin_command_that_finds_the_database_busy_says_so_in_one_line(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    assert run(capsys, "--config", str(config), "once")[0] == 0
    writer = sqlite3.connect(tmp_path / "r.db")
    writer.execute("BEGIN IMMEDIATE")  # a long write elsewhere, as a `prune --vacuum` would hold
    try:
        code = run_bot.main(["--config", str(config), "mute", "--rule", "cage-fight", "--for", "1h"])
    finally:
        writer.rollback()
        writer.close()
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "ringside: error: the database: database is locked: another process kept it busy for 10 s; try again"
    ]
