"""The outbox from the command line: alerts status and retry-dead, mute and unmute; secrets kept out of
logs and the database when channels fail."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest

import run_bot
from config import ConfigError, load_settings
from storage import Store
from tests.conftest import DEMO_FEED, replay_config
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
    assert code == 0
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
    handler.setFormatter(run_bot.JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
    handler.addFilter(run_bot.RedactSecrets([SLACK_URL]))
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
