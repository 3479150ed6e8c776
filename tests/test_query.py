"""The rule language: what parses, and errors that name the rule file, the rule id and the column."""

from __future__ import annotations

import pytest

from bot.detect.query import And, Near, Not, Or, QuerySyntaxError, Term, parse
from bot.detect.rules import load_rules, rule_from_table
from config import ConfigError


def test_words_side_by_side_are_anded_and_or_binds_looser():
    tree = parse('cage fight OR "send me location"')
    assert isinstance(tree, Or)
    assert isinstance(tree.parts[0], And) and tree.parts[1] == Term(
        "send me location", ("send", "me", "location")
    )


def test_not_near_wildcards_hashtags_mentions_and_emoji_parse():
    tree = parse('(fight* NEAR/3 him) #CageFight @zuck 🥊 NOT "nicolas cage"')
    near, hashtag, mention, emoji, excluded = tree.parts
    assert isinstance(near, Near) and near.distance == 3 and near.left.prefix
    assert (hashtag.marker, hashtag.words) == ("#", ("cagefight",))
    assert (mention.marker, mention.words) == ("@", ("zuck",))
    assert emoji.words == ("🥊",)
    assert isinstance(excluded, Not)


def test_terms_are_folded_like_post_text():
    assert parse('"Envoie-moi le LIEU"').words == ("envoie", "moi", "le", "lieu")
    assert parse("prêt").words == ("pret",)


@pytest.mark.parametrize(
    ("query", "column", "message"),
    [
        ('"cage match', 1, "never closed"),
        ("(cage OR fight", 1, "expected ')'"),
        ("cage OR", 8, "query ends"),
        ("cage )", 6, "unexpected ')'"),
        ("fi*", 1, "at least 3 letters"),
        ("fi*ght", 1, "only goes at the end"),
        ("NOT cage", 1, "only excludes"),
        ("cage NEAR/99 fight", 6, "too far"),
        ("a NEAR/2 (b AND c)", 3, "NEAR joins"),
        ('"!!!"', 1, "no letters"),
        ("", 1, "empty"),
    ],
)
def test_a_bad_query_says_what_is_wrong_and_where(query, column, message):
    with pytest.raises(QuerySyntaxError) as error:
        parse(query)
    assert error.value.column == column and message in str(error.value)


def test_a_query_that_could_blow_up_is_refused_when_loaded():
    with pytest.raises(QuerySyntaxError, match="nested deeper"):
        parse("(" * 20 + "cage" + ")" * 20)
    with pytest.raises(QuerySyntaxError, match="more than 300 words"):
        parse(" OR ".join(f"word{i}" for i in range(301)))


def test_a_syntax_error_in_a_rule_file_names_the_file_the_rule_and_the_column(tmp_path):
    (tmp_path / "mine.toml").write_text(
        '[[rules]]\nid = "good"\ncategory = "taunt"\nquery = "coward"\n\n'
        '[[rules]]\nid = "broken"\ncategory = "challenge"\nquery = \'("cage match" OR octagon\'\n'
    )
    with pytest.raises(ConfigError) as error:
        load_rules(tmp_path)
    assert (
        str(error.value)
        == f"{tmp_path / 'mine.toml'}: rule broken: query column 1: expected ')' to close the '(' here"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"id": "Bad Id", "category": "c", "query": "x"}, "id: expected lower-case"),
        (
            {"id": "r", "category": "challenge", "query": "x", "severity": 9},
            "rule r: severity: expected a whole number from 1 to 5",
        ),
        ({"id": "r", "category": "challenge"}, "rule r: query: expected a query string"),
        (
            {"id": "r", "category": "challenge", "query": "x", "kinds": ["story"]},
            "kinds: 'story' is not one of",
        ),
        ({"id": "r", "category": "challenge", "query": "x", "querry": "y"}, "unknown key 'querry'"),
    ],
)
def test_a_bad_rule_field_is_named(table, message):
    with pytest.raises(ConfigError, match=message):
        rule_from_table(table, "rules.toml: rules[0]")


def test_two_rules_with_one_id_across_files_are_refused(tmp_path):
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text('[[rules]]\nid = "same"\ncategory = "taunt"\nquery = "coward"\n')
    with pytest.raises(ConfigError, match=r"b\.toml: rule same: id already used in .*a\.toml"):
        load_rules(tmp_path)


def test_the_shipped_rule_pack_loads():
    from config import DEFAULT_RULES

    rules = load_rules(DEFAULT_RULES)
    assert {r.category for r in rules} == {"challenge", "rivalry", "taunt", "response", "veto"}
    assert len({r.id for r in rules}) == len(rules)
