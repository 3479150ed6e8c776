"""The operator's verdicts: `label` stores them, `backtest --db` scores the detector on them, `train` learns
from them; and the demo, run with the shipped model, shows why the model alerted."""

from __future__ import annotations

import json
import shutil

import pytest

import run_bot
from bot.detect.corpus import TRAIN_DIR
from bot.detect.scorer import Scorer
from storage import Store
from tests.conftest import DEMO_FEED, ROOT, replay_config
from tests.test_reports import PEOPLE_TOML

MODEL = ROOT / "config" / "model" / "scorer.json"
CHALLENGE = "x:1671370010000000004"  # "I'm up for a cage match if he is lol"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run_bot.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def demo(tmp_path, write_config, capsys):
    """The demo feed run once with the shipped model, into a database; the settings that name it."""
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db", model=str(MODEL)) + PEOPLE_TOML)
    code, out, _ = cli(capsys, "--config", str(config), "once")
    assert code == 0
    return config, tmp_path / "r.db", out


def test_the_demo_alerts_a_post_no_rule_catches_and_says_why(demo):
    _, database, out = demo
    with Store.open(database) as store:
        rows = store.db.execute(
            "SELECT p.text, h.probability, h.why FROM hits h JOIN posts p ON p.key = h.post_key"
            " WHERE h.rule_id = 'model'"
        ).fetchall()
    assert rows, "the demo should show the model catching what the rules miss"
    for text, probability, why in rows:
        assert probability >= Scorer.load().threshold
        for start, end, term in json.loads(why):
            assert text[start:end] == term
    assert "· rule model" in out and "why: '" in out and "(model, p=0." in out


def test_a_rule_hit_records_the_models_probability_beside_the_rule(demo):
    _, database, _ = demo
    with Store.open(database) as store:
        (probability,) = store.db.execute(
            "SELECT probability FROM hits WHERE post_key = ? AND rule_id = 'cage-fight'", [CHALLENGE]
        ).fetchone()
    assert 0 <= probability <= 1


def test_label_stores_a_verdict_by_post_key_and_a_new_one_replaces_it(demo, capsys):
    config, database, _ = demo
    code, out, _ = cli(capsys, "--config", str(config), "label", CHALLENGE, "none")
    assert code == 0 and out.startswith(f"{CHALLENGE}: labelled none; 1 label(s) stored")
    assert cli(capsys, "--config", str(config), "label", CHALLENGE, "flag", "--category", "challenge")[0] == 0
    with Store.open(database) as store:
        (verdict,) = store.verdicts()
    assert (verdict.label, verdict.category, verdict.source) == ("flag", "challenge", "cli")
    assert verdict.text == "I'm up for a cage match if he is lol"


def test_label_by_alert_id_labels_the_post_the_alert_is_about(demo, capsys):
    config, database, _ = demo
    with Store.open(database) as store:
        alert_id, post_key = store.db.execute(
            "SELECT a.id, h.post_key FROM alerts a JOIN hits h ON h.id = a.hit_id ORDER BY a.id LIMIT 1"
        ).fetchone()
    code, out, _ = cli(capsys, "--config", str(config), "label", str(alert_id), "none", "--alert")
    assert code == 0 and out.startswith(f"{post_key}: labelled none")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x:nope", "flag"], "no stored post 'x:nope'"),
        (["999999", "none", "--alert"], "no alert 999999 about a post"),
        (["abc", "none", "--alert"], "--alert: expected an alert id (a number), got 'abc'"),
        ([CHALLENGE, "flag", "--category", "coverage"], "--category: with flag, expected one of challenge"),
    ],
)
def test_a_bad_label_is_one_line_and_exit_code_2(demo, capsys, args, message):
    config, _, _ = demo
    code, _, err = cli(capsys, "--config", str(config), "label", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_backtest_db_scores_the_detector_on_the_operators_labels(demo, capsys):
    config, _, _ = demo
    cli(capsys, "--config", str(config), "label", CHALLENGE, "flag")
    cli(capsys, "--config", str(config), "label", "x:1671370010000000001", "none")  # "I wonder if Threads..."
    code, out, _ = cli(capsys, "--config", str(config), "backtest", "--db")
    assert code == 0
    assert out.strip().splitlines()[-1] == "precision=1.000 recall=1.000 f1=1.000 tp=1 fp=0 fn=0 tn=1"
    assert "domain operator" not in out  # one domain: no per-domain table
    code, out, _ = cli(capsys, "--config", str(config), "backtest", "--db", "--json")
    posts = json.loads(out)["posts"]
    assert {p["id"] for p in posts} == {"1671370010000000004", "1671370010000000001"}
    assert all(0 <= p["probability"] <= 1 for p in posts)


def test_train_adds_the_operators_labels_with_more_weight(demo, tmp_path, capsys):
    config, database, _ = demo
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(TRAIN_DIR.glob("*.jsonl"))[:4]:  # a small corpus keeps the test quick
        shutil.copy(path, corpus)
    with Store.open(database) as store:
        key = store.db.execute("SELECT key FROM posts WHERE text = 'Vegas Octagon'").fetchone()[0]
    assert cli(capsys, "--config", str(config), "label", key, "none")[0] == 0
    out_with, out_without = tmp_path / "with.json", tmp_path / "without.json"
    assert (
        cli(capsys, "--config", str(config), "train", "--corpus", str(corpus), "--out", str(out_with))[0] == 0
    )
    code, out, _ = cli(
        capsys,
        "--config",
        str(config),
        "train",
        "--corpus",
        str(corpus),
        "--out",
        str(out_without),
        "--no-labels",
    )
    assert code == 0 and out.startswith(f"wrote {out_without} and without.npz: threshold 0.")
    with_labels, without = Scorer.load(out_with), Scorer.load(out_without)
    assert with_labels.meta["trained_on"]["operator_labels"] == 1
    assert without.meta["trained_on"]["operator_labels"] == 0
    assert with_labels.probabilities(["Vegas Octagon"])[0] < without.probabilities(["Vegas Octagon"])[0]


def test_train_without_a_corpus_is_one_line_and_exit_code_2(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--corpus", str(tmp_path), "--out", str(tmp_path / "m.json"))
    assert code == 2 and f"--corpus: no *.jsonl files in {tmp_path}" in err


def test_a_missing_model_file_is_one_line_naming_it(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db", model=str(tmp_path / "gone.json")))
    code, _, err = cli(capsys, "--config", str(config), "once")
    assert code == 2
    missing = tmp_path / "gone.json"
    assert (
        err.strip() == f"ringside: error: {missing}: no such model file (rebuild it with: run_bot.py train)"
    )


def test_check_config_shows_the_detector(capsys):
    code, out, _ = cli(capsys, "check-config")
    shown = json.loads(out)
    assert code == 0 and shown["detector"]["threshold"] == "auto"
    assert shown["detector"]["model"].endswith("scorer.json")


def test_a_bad_model_is_refused_before_the_database_is_created_or_migrated(tmp_path, write_config, capsys):
    (tmp_path / "bad.json").write_text("{}")
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db", model=str(tmp_path / "bad.json")))
    for command in ("once", "check-config"):
        code, _, err = cli(capsys, "--config", str(config), command)
        assert code == 2 and "not a ringside.scorer/1 model file" in err
    assert not (tmp_path / "r.db").exists()


def test_backtest_works_from_any_directory_with_the_shipped_rules_and_model(tmp_path, monkeypatch, capsys):
    feed = tmp_path / "posts.jsonl"
    feed.write_text(json.dumps({"text": "I'm up for a cage match if he is lol", "label": "flag"}) + "\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "backtest", str(feed))
    assert code == 0, err
    assert "cage-fight(challenge)" in out and out.strip().endswith("tp=1 fp=0 fn=0 tn=0")


def test_train_refuses_an_out_file_that_is_not_json(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--corpus", str(TRAIN_DIR), "--out", str(tmp_path / "m.npz"))
    assert code == 2 and "--out: a model file is NAME.json" in err
