"""Backtest: how users try rules before deploying them, and the default pack's scores on labelled posts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run_bot
from bot.backtest import run_backtest

DATA = Path(__file__).parent / "data"


def backtest(capsys, *args: str) -> tuple[int, str, str]:
    code = run_bot.main(["backtest", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_backtest_prints_flagged_posts_with_rules_and_highlights_then_the_scores(write_feed, capsys):
    feed = write_feed(
        [
            {"id": "a", "text": "I'm up for a cage match if he is lol", "label": "flag"},
            {"id": "b", "text": "Nicolas Cage fights bees", "label": "none"},
            {"id": "c", "text": "Send Me Location", "label": "none"},
            {"id": "d", "text": "Loser buys dinner. You in?", "label": "flag"},
        ]
    )
    code, out, _ = backtest(capsys, str(feed), "--model", "off")
    assert code == 0
    assert "  a  cage-fight(challenge)  I'm up for a **cage match** if he is lol" in out
    assert "missed (labelled flag): 1\n  d  -  Loser buys dinner. You in?" in out
    assert "  c  " not in out.split("wrongly flagged")[0]  # a response alone is not flagged
    assert out.strip().splitlines()[-1] == "precision=1.000 recall=0.500 f1=0.667 tp=1 fp=0 fn=1 tn=2"


def test_json_output_is_one_machine_readable_object(write_feed, capsys):
    feed = write_feed([{"text": "Vegas Octagon", "label": "flag"}, {"text": "hello"}])
    code, out, _ = backtest(capsys, str(feed), "--json", "--model", "off")
    result = json.loads(out)
    assert code == 0
    first, second = result["posts"]
    assert first["flagged"] and first["hits"][0]["rule"] == "cage-fight"
    assert first["hits"][0]["spans"] == [[6, 13, "octagon"]]
    assert second == {
        "id": "line-2",
        "label": None,
        "flagged": False,
        "probability": None,
        "exchange": None,
        "hits": [],
    }
    assert result["scores"]["tp"] == 1


def test_a_broken_line_is_reported_with_its_number_and_the_rest_is_scored(write_feed, capsys, caplog):
    feed = write_feed([{"text": "Vegas Octagon", "label": "flag"}, "{oops", {"text": "x", "label": "maybe"}])
    code, out, _ = backtest(capsys, str(feed), "--model", "off")
    assert code == 0
    assert f"{feed}:2: skipped:" in caplog.text
    assert f"{feed}:3: skipped: field 'label' must be \"flag\" or \"none\", got 'maybe'" in caplog.text
    assert out.strip().endswith("tp=1 fp=0 fn=0 tn=0")


def test_other_rules_can_be_tried_with_rules(tmp_path, write_feed, capsys):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "mine.toml").write_text(
        '[[rules]]\nid = "bees"\ncategory = "taunt"\nquery = "bees"\n'
    )
    feed = write_feed([{"text": "Nicolas Cage fights bees"}])
    _, out, _ = backtest(capsys, str(feed), "--rules", str(tmp_path / "rules"), "--model", "off")
    assert "bees(taunt)" in out


def test_a_missing_backtest_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    code, _, err = backtest(capsys, str(tmp_path / "nope.jsonl"))
    assert code == 2 and err.strip() == f"ringside: error: {tmp_path / 'nope.jsonl'}: backtest file not found"


@pytest.fixture(scope="module")
def labelled():
    return [json.loads(line) for line in (DATA / "labelled.jsonl").read_text(encoding="utf-8").splitlines()]


def test_the_labelled_set_is_large_bilingual_and_has_both_labels(labelled):
    assert len(labelled) >= 200
    for lang in ("en", "fr"):
        assert {r["label"] for r in labelled if r["lang"] == lang} == {"flag", "none"}


def test_the_default_pack_scores_above_0_95_f1_on_the_labelled_set(detector):
    scores = run_backtest(DATA / "labelled.jsonl", detector).scores
    assert scores.f1 > 0.95, scores.summary()


def test_the_default_pack_does_not_regress_on_the_holdout_set(detector):
    # holdout.jsonl was written blind, after the first pack, which scored f1=0.649 on it. Its misses then
    # shaped the no-guts rule, so it is a regression set now, not a blind one (README, "Rules").
    scores = run_backtest(DATA / "holdout.jsonl", detector).scores
    assert scores.f1 >= 0.9, scores.summary()


def test_a_labelled_file_saved_with_a_byte_order_mark_keeps_its_first_line(tmp_path, capsys):
    feed = tmp_path / "bom.jsonl"
    lines = [{"text": "Vegas Octagon", "label": "flag"}, {"text": "hello", "label": "none"}]
    feed.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8-sig")
    code, out, _ = backtest(capsys, str(feed), "--model", "off")
    assert code == 0
    assert out.strip().splitlines()[-1] == "precision=1.000 recall=1.000 f1=1.000 tp=1 fp=0 fn=0 tn=1"
