"""The detector: the label guide's examples, the decision of rules and model together, explanations mapped
back to the original text, the model files' round trip, and the frozen blind set."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.detect.corpus import BLIND_DIR, TRAIN_DIR, Example, digest, near_duplicates, read_dir, read_examples
from bot.detect.detector import Detector, alerts_on
from bot.detect.features import featurize
from bot.detect.matcher import Matcher
from bot.detect.rules import rule_from_table
from bot.detect.scorer import ModelError, Scorer
from bot.detect.train import train
from bot.models import MODEL_RULE, Post
from bot.timeutil import utcnow
from config import ConfigError
from tests.conftest import DEMO_FEED, ROOT

GUIDE = ROOT / "docs" / "labelling.md"


def post(text: str, id: str = "1", lang: str | None = None) -> Post:
    return Post("x", id, "someone", text, utcnow(), lang=lang)


def guide_examples() -> list[tuple[str, str, str, str]]:
    """(lang, text, label, category) for each row of the guide's table of examples."""
    section = GUIDE.read_text(encoding="utf-8").split("## Examples in each language")[1].split("\n## ")[0]
    return re.findall(r'^\| (\w\w) \| "(.*)" \| (flag|none) \| (\w+) \|$', section, re.M)


# -- the label guide ---------------------------------------------------------------------------------------


def test_the_guide_gives_flag_and_none_examples_in_each_of_the_six_languages():
    examples = guide_examples()
    assert len(examples) >= 20
    for lang in ("en", "fr", "es", "de", "pt", "it"):
        assert {label for code, _, label, _ in examples if code == lang} == {"flag", "none"}, lang


def test_the_shipped_detector_decides_the_guides_examples_as_the_guide_does(shipped_detector):
    examples = guide_examples()
    judged = shipped_detector.judge(
        [post(text, str(i), lang) for i, (lang, text, _, _) in enumerate(examples)]
    )
    wrong = [ex[1] for ex, j in zip(examples, judged, strict=True) if j.flagged != (ex[2] == "flag")]
    # Known disagreements, kept visible: the cage-fight rule flags a press retelling (coverage by the guide),
    # and "Send Me Location" alone is left to exchange detection, which links it to the challenge it answers.
    assert len(wrong) <= 3, wrong
    by_text = {ex[1]: j for ex, j in zip(examples, judged, strict=True)}
    assert by_text["I'm up for a cage match if he is lol"].flagged
    assert not by_text["Nicolas Cage fights bees in his new movie 🐝"].flagged
    assert not by_text["send me the location of the meetup pls"].flagged


def test_every_corpus_line_follows_the_guide_and_the_corpus_is_large_and_varied():
    corpus = read_dir(TRAIN_DIR)  # raises CorpusError naming file and line on any bad line
    assert len(corpus) >= 4000
    by_lang = {lang: [e for e in corpus if e.lang == lang] for lang in ("en", "fr", "es", "de", "pt", "it")}
    assert len(by_lang["en"]) >= 1200 and len(by_lang["fr"]) >= 800
    assert all(len(by_lang[lang]) >= 400 for lang in ("es", "de", "pt", "it"))
    for lang, examples in by_lang.items():
        assert sum(not e.flagged for e in examples) / len(examples) >= 0.45, lang
    assert len({e.domain for e in corpus}) >= 15
    assert len({e.writer for e in corpus}) >= 8
    assert len({e.text for e in corpus}) == len(corpus)


# -- the decision ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedScorer(Scorer):
    """The shipped model with its probability set by the test; its categories and explanations are real."""

    fixed: float = 0.5

    def probabilities_of(self, batch):  # type: ignore[no-untyped-def]
        return np.full(batch.size, self.fixed)


def fixed(probability: float, scorer: Scorer) -> FixedScorer:
    return FixedScorer(**{f.name: getattr(scorer, f.name) for f in fields(Scorer)}, fixed=probability)


def rules(*tables: dict) -> Matcher:
    return Matcher([rule_from_table(t, "test") for t in tables])


CAGE = {"id": "cage", "category": "challenge", "severity": 3, "query": '"cage match"'}
ANSWER = {"id": "answer", "category": "response", "query": '"send me location"'}
VETO = {"id": "studio", "category": "veto", "query": '"octagon studio"'}


def test_a_rule_hit_carries_the_models_probability_and_severity_follows_it(scorer):
    sure = Detector(rules(CAGE), fixed(0.95, scorer)).judge([post("cage match tonight?")])[0]
    doubtful = Detector(rules(CAGE), fixed(0.1, scorer)).judge([post("cage match tonight?")])[0]
    (hit,) = sure.hits
    assert hit.rule_id == "cage" and hit.probability == pytest.approx(0.95) and hit.severity == 4
    assert doubtful.hits[0].severity == 2 and doubtful.flagged  # a rule still alerts; its severity drops


def test_the_model_alone_alerts_at_the_threshold_with_its_reasons(scorer):
    detector = Detector(rules(CAGE), fixed(0.8, scorer), threshold=0.5)
    (judgement,) = detector.judge([post("Name the day. I'll be there.")])
    (hit,) = judgement.hits
    assert hit.rule_id == MODEL_RULE and hit.category in scorer.categories and alerts_on(hit)
    assert hit.why == hit.spans and hit.why
    below = Detector(rules(CAGE), fixed(0.8, scorer), threshold=0.85)
    assert not below.judge([post("Name the day. I'll be there.")])[0].flagged


def test_a_veto_suppresses_the_rules_and_the_model_but_is_kept_as_a_silent_hit(scorer):
    detector = Detector(rules(CAGE, VETO), fixed(0.99, scorer), threshold=0.5)
    (judgement,) = detector.judge([post("cage match merch now at Octagon Studio")])
    assert not judgement.flagged
    assert [h.rule_id for h in judgement.hits] == ["studio"]


def test_a_silent_response_is_kept_for_exchanges_whatever_the_model_says(scorer):
    quiet = Detector(rules(ANSWER), fixed(0.01, scorer)).judge([post("Send Me Location")])[0]
    assert [h.rule_id for h in quiet.hits] == ["answer"] and not quiet.flagged
    loud = Detector(rules(ANSWER), fixed(0.99, scorer), threshold=0.5).judge([post("Send Me Location")])[0]
    assert {h.rule_id for h in loud.hits} == {"answer", MODEL_RULE} and loud.flagged


def test_without_a_model_the_detector_is_the_rule_pack(matcher):
    (judgement,) = Detector(matcher).judge([post("I'm up for a cage match if he is lol")])
    assert judgement.probability is None and [h.rule_id for h in judgement.hits] == ["cage-fight"]
    assert judgement.hits[0].why == ()


def test_a_rule_cannot_take_the_models_name():
    with pytest.raises(ConfigError, match="'model' is reserved"):
        rule_from_table({"id": "model", "category": "taunt", "query": "x"}, "f.toml: rules[0]")


def test_the_shipped_model_catches_a_challenge_with_no_fight_word_that_no_rule_catches(shipped_detector):
    text = "Name the day, @rival. Your gym or mine, I'll bring the popcorn."
    (judgement,) = shipped_detector.judge([post(text)])
    assert [h.rule_id for h in judgement.hits] == [MODEL_RULE]
    assert judgement.probability >= shipped_detector.threshold


# -- explanations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Je suis prêt pour un combat, donne-moi la date et l'adresse 😤",
        "𝐍𝐚𝐦𝐞 𝐭𝐡𝐞 𝐝𝐚𝐲, I'll be there 🥊🥊",
        "ＮＡＭＥ ＴＨＥ ＤＡＹ. you copied our app again lol",
        "Ｔｅ reto a un debate, cuándo y dónde quieras 🎤",
    ],
)
def test_explanations_are_spans_of_the_original_text_through_accents_emoji_and_styled_letters(scorer, text):
    why = scorer.explain(text)
    assert why
    for span in why:
        assert 0 <= span.start < span.end <= len(text)
        assert text[span.start : span.end] == span.term
        # a span never starts or ends inside a word
        assert span.start == 0 or not text[span.start - 1].isalnum()
        assert span.end == len(text) or not text[span.end].isalnum()


def test_the_explanation_points_at_what_drove_the_score(scorer):
    text = "lovely weather in Lisbon today. they copied our app again lol"
    phrases = " ".join(s.term for s in scorer.explain(text)).lower()
    assert "copied" in phrases
    assert "weather" not in phrases


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_scoring_a_batch_gives_each_post_what_it_gets_alone_whatever_the_text(scorer, texts):
    together = scorer.probabilities(texts)
    alone = np.array([scorer.probabilities([t])[0] for t in texts])
    assert np.allclose(together, alone)
    for text in texts:
        for span in scorer.explain(text):
            assert text[span.start : span.end] == span.term


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_a_post_scores_the_same_from_its_folded_line_as_from_its_text(scorer, texts):
    from bot.detect.normalize import fold_line

    from_lines = scorer.probabilities_of_lines([fold_line(text) for text in texts])
    assert np.array_equal(from_lines, scorer.probabilities(texts))


def test_a_poll_judged_at_once_gives_each_post_the_judgement_it_gets_alone(shipped_detector):
    texts = [*(e.text for e in read_dir(BLIND_DIR)[:300]), "", "cage match " * 6_000 + "tonight"]
    posts = [post(text, id=str(index)) for index, text in enumerate(texts)]
    together = shipped_detector.judge(posts)
    alone = [shipped_detector.judge([p])[0] for p in posts]
    assert together == alone
    assert sum(j.flagged for j in together) > 50 and sum(bool(j.rule_hits) for j in together) > 5


def test_hashing_is_the_same_in_every_process():
    # A fixed hash: Python's own hash() changes with PYTHONHASHSEED and would scramble a saved model.
    batch = featurize(["cage match"])
    assert batch.column[:3].tolist() == featurize(["cage match"]).column[:3].tolist()
    assert batch.column[:3].tolist() == [126356, 243612, 27761]


# -- model files -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> Scorer:
    corpus = read_dir(TRAIN_DIR)[::6]
    return train(corpus, strength=10.0, threshold=0.5, meta={"note": "test"})


def test_a_saved_model_loads_without_running_code_and_scores_the_same(small_model, tmp_path):
    small_model.save(tmp_path / "m.json")
    loaded = Scorer.load(tmp_path / "m.json")
    texts = ["I'm up for a cage match if he is lol", "nice weather"]
    assert np.allclose(loaded.probabilities(texts), small_model.probabilities(texts), atol=1e-5)
    assert loaded.categories == small_model.categories and loaded.threshold == 0.5
    assert json.loads((tmp_path / "m.json").read_text())["note"] == "test"
    with np.load(tmp_path / "m.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["category_weights", "weights"]


def test_training_twice_writes_the_same_bytes(small_model, tmp_path):
    again = train(read_dir(TRAIN_DIR)[::6], strength=10.0, threshold=0.5, meta={"note": "test"})
    small_model.save(tmp_path / "a.json")
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_a_model_whose_arrays_were_swapped_or_damaged_is_refused(small_model, scorer, tmp_path):
    small_model.save(tmp_path / "m.json")
    (tmp_path / "m.npz").write_bytes((ROOT / "config" / "model" / "scorer.npz").read_bytes())
    with pytest.raises(ModelError, match=r"does not belong to m\.json"):
        Scorer.load(tmp_path / "m.json")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a model file"):
        Scorer.load(tmp_path / "m.json")
    with pytest.raises(ModelError, match="no such model file"):
        Scorer.load(tmp_path / "missing.json")


def test_a_model_file_holding_a_pickle_is_not_loaded(small_model, tmp_path):
    import hashlib

    small_model.save(tmp_path / "m.json")
    with open(tmp_path / "m.npz", "wb") as handle:
        np.savez(handle, weights=np.array([object()], dtype=object), category_weights=np.zeros(1))
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["arrays_sha256"] = hashlib.sha256((tmp_path / "m.npz").read_bytes()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="allow_pickle"):  # numpy refuses to unpickle the object array
        Scorer.load(tmp_path / "m.json")


def test_operator_labels_weigh_more_than_corpus_lines():
    base = [
        Example("they copied us again lol", "flag", "taunt", "en", "d", "w1"),
        Example("lovely weather today", "none", "none", "en", "d", "w1"),
    ] * 10
    text = "we grill the best burgers in town"
    plain = train([*base, Example(text, "flag", "taunt", "en", "operator", "operator")], 10.0, 0.5)
    weighted = train(
        [*base, Example(text, "flag", "taunt", "en", "operator", "operator", weight=3.0)], 10.0, 0.5
    )
    assert weighted.probabilities([text])[0] > plain.probabilities([text])[0]


# -- the blind set -----------------------------------------------------------------------------------------

# Frozen when first scored: never trained on, never used to choose a threshold. A change to these files is a
# new blind set, which needs new writers (docs/labelling.md, README "Detection").
BLIND_SHA256 = "bbe6a2cce34adceca55259dce8acd357343ac67a8908768dfd966c532207983e"


def test_the_blind_set_is_frozen():
    assert digest(BLIND_DIR.glob("*.jsonl")) == BLIND_SHA256


def test_the_blind_set_holds_no_near_duplicate_of_a_training_post():
    blind, corpus = read_dir(BLIND_DIR), read_dir(TRAIN_DIR)
    assert len(blind) >= 600
    assert near_duplicates([e.text for e in blind], [e.text for e in corpus], threshold=0.8) == []


def test_retraining_from_the_shipped_corpus_reproduces_the_shipped_model_on_the_blind_set(scorer, matcher):
    from bot.backtest import Case, score_cases

    meta = scorer.meta
    retrained = train(read_dir(TRAIN_DIR), strength=meta["strength"], threshold=scorer.threshold)
    cases = [Case(post(e.text, e.id, e.lang), e.label, e.domain) for e in read_dir(BLIND_DIR)]
    shipped = score_cases(cases, Detector(matcher, scorer)).scores
    rebuilt = score_cases(cases, Detector(matcher, retrained)).scores
    assert abs(shipped.f1 - rebuilt.f1) <= 0.01, (shipped.summary(), rebuilt.summary())
    assert meta["trained_on"]["corpus_sha256"] == digest(TRAIN_DIR.glob("*.jsonl"))


def test_the_shipped_models_threshold_is_the_cross_validated_one(scorer):
    assert scorer.meta["cross_validation"]["folds"].endswith("grouped by writer")
    assert 0.2 <= scorer.threshold <= 0.8


def test_settings_refuse_a_threshold_outside_zero_and_one(write_config, tmp_path):
    from config import load_settings

    source = f'[[sources]]\nname = "r"\ntype = "replay"\npath = "{DEMO_FEED}"\n'
    for bad in ("1.5", "0", '"high"', "nan"):
        path = write_config(f"[detector]\nthreshold = {bad}\n" + source)
        with pytest.raises(ConfigError, match=r"detector\.threshold: expected"):
            load_settings(path, environ={})


def test_settings_can_turn_the_model_off_or_fix_the_threshold(write_config, tmp_path):
    from config import load_settings

    source = f'[[sources]]\nname = "r"\ntype = "replay"\npath = "{DEMO_FEED}"\n'
    off = load_settings(write_config('[detector]\nmodel = "off"\n' + source), environ={})
    fixed = load_settings(write_config("[detector]\nthreshold = 0.7\n" + source), environ={})
    assert off.detector.model is None
    assert fixed.detector.threshold == 0.7 and fixed.detector.model is not None
    assert replace(fixed.detector, threshold=None).threshold is None


# -- what a review found -----------------------------------------------------------------------------------


def test_two_posts_with_one_key_in_a_batch_each_get_their_own_explanation(scorer):
    texts = ["whenever you want, name the day. your gym or mine", "ok bet, see you saturday"]
    detector = Detector(rules(CAGE), fixed(0.99, scorer), threshold=0.5)
    judged = detector.judge([post(text, id="same") for text in texts])
    for text, judgement in zip(texts, judged, strict=True):
        for span in judgement.hits[0].why:
            assert text[span.start : span.end] == span.term


def test_a_long_post_is_explained_from_its_n_grams_and_stays_in_the_text(scorer):
    text = "they copied our app again lol, " * 800 + "name the day"
    for span in scorer.explain(text):
        assert text[span.start : span.end] == span.term


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"categories": 5}, "'categories' must be a list of names"),
        ({"bias": None}, "'bias' must be a number"),
        ({"category_bias": "abc"}, "'category_bias' must be one number per category"),
        ({"category_bias": [0.0]}, "'category_bias' must be one number per category"),
        ({"threshold": 1.5}, "'threshold' must be a number between 0 and 1"),
        ({"features": 1}, "made for other features (version 1"),
        ({"format": "other/1"}, "not a ringside.scorer/1 model file"),
    ],
)
def test_a_model_file_with_bad_fields_is_refused_with_what_is_wrong(small_model, tmp_path, change, message):
    small_model.save(tmp_path / "m.json")
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(ModelError, match=re.escape(message)):
        Scorer.load(tmp_path / "m.json")


def test_model_arrays_that_are_not_an_npz_are_refused(small_model, tmp_path):
    import hashlib

    small_model.save(tmp_path / "m.json")
    (tmp_path / "m.npz").write_bytes(b"not a zip at all")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["arrays_sha256"] = hashlib.sha256(b"not a zip at all").hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a model's arrays"):
        Scorer.load(tmp_path / "m.json")


def test_only_a_given_strength_is_cross_validated_and_a_given_threshold_is_kept():
    corpus = read_dir(TRAIN_DIR)[::10]
    fixed_threshold = train(corpus, threshold=0.6)
    fixed_strength = train(corpus, strength=3.0)
    assert fixed_threshold.threshold == 0.6
    assert fixed_strength.meta["strength"] == 3.0


def test_a_corpus_file_saved_with_a_byte_order_mark_keeps_its_first_line(tmp_path):
    line = {"id": "x1", "text": "Je te défie", "lang": "fr", "domain": "sport", "writer": "w99"}
    line |= {"label": "flag", "category": "challenge"}
    path = tmp_path / "bom.jsonl"
    path.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8-sig")
    assert [example.text for example in read_examples(path)] == ["Je te défie"]


def test_help_answers_without_importing_numpy_sqlite_utils_or_the_detector():
    import subprocess
    import sys

    probe = (
        "import runpy, sys\n"
        "sys.argv = ['run_bot.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'run_bot.py')!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "usage: run_bot.py" in done.stdout
    loaded = set(done.stderr.split())
    heavy = {"numpy", "sqlite_utils", "tabulate", "prometheus_client", "apscheduler", "bot.detect.matcher"}
    assert "argparse" in loaded
    assert not heavy & loaded
