"""Segment rules: the shipped defaults, the expression language, every refusal, and
the enter/exit arithmetic."""

from __future__ import annotations

import json
import pickle
import re
import tomllib
from pathlib import Path

import pytest

from dmp_faust.domain.segments import (
    MAX_RULE_CHARS,
    MAX_RULE_DEPTH,
    RuleError,
    SegmentRule,
    changes,
    definition,
    evaluate,
    load_rules,
    parse_rules,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE = "test.toml"


def rule(text: str) -> SegmentRule:
    return SegmentRule("s", "", text)


def refusal(text: str) -> RuleError:
    """The error of a one-segment file whose segment 's' has rule ``text``."""
    with pytest.raises(RuleError) as caught:
        parse_rules(f"[segments.s]\nrule = {json.dumps(text)}\n", SOURCE)
    return caught.value


def file_refusal(text: str) -> RuleError:
    with pytest.raises(RuleError) as caught:
        parse_rules(text, SOURCE)
    return caught.value


# --- the shipped defaults -------------------------------------------------------------


def test_shipped_defaults_are_the_contracts_segments() -> None:
    rules = load_rules(None)
    assert [r.id for r in rules] == ["clickers", "converters", "engaged"]
    assert all(r.description for r in rules)


@pytest.mark.parametrize(
    ("facts", "segments"),
    [
        pytest.param({}, set(), id="new-profile"),
        pytest.param({"counts.click": 0}, set(), id="no-click"),
        pytest.param({"counts.click": 1}, {"clickers"}, id="one-click"),
        pytest.param({"counts.impression": 50}, set(), id="impressions-only"),
        pytest.param({"counts.conversion": 0}, set(), id="no-conversion"),
        pytest.param({"counts.conversion": 1}, {"converters"}, id="one-conversion"),
        pytest.param({"counts.page_view": 4}, set(), id="four-page-views"),
        pytest.param({"counts.page_view": 5}, {"engaged"}, id="five-page-views"),
        pytest.param({"counts.page_view": 500}, {"engaged"}, id="many-page-views"),
        pytest.param(
            {"counts.click": 3, "counts.conversion": 1, "counts.page_view": 9},
            {"clickers", "converters", "engaged"},
            id="all-three",
        ),
    ],
)
def test_shipped_defaults_match_the_contract(facts: dict[str, float], segments: set[str]) -> None:
    assert evaluate(load_rules(None), facts) == segments


def test_shipped_file_is_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "segments.toml" in pyproject["tool"]["setuptools"]["package-data"]["dmp_faust"]


def test_definition_gives_rule_and_description() -> None:
    clickers = load_rules(None)[0]
    assert definition(clickers) == {
        "rule": "counts.click >= 1",
        "description": "At least one click",
    }


# --- loading a file -------------------------------------------------------------------


def test_load_rules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[segments.fans]\nrule = "interests.sports >= 3"\n', encoding="utf-8")
    (fans,) = load_rules(path)
    assert (fans.id, fans.description, fans.rule) == ("fans", "", "interests.sports >= 3")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(None, "cannot read", id="missing-file"),
        pytest.param(b"\xff\xfe[segments]", "not UTF-8", id="not-utf8"),
    ],
)
def test_load_rules_names_an_unreadable_file(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "segments.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RuleError, match=re.escape(f"{path}: {problem}")):
        load_rules(path)


def test_rules_keep_file_order_and_strip_the_rule() -> None:
    text = (
        '[segments.b]\nrule = """\n(counts.click >= 1\n or ids > 1)\n"""\n'
        '[segments.a]\nrule = "ids == 1"\n'
    )
    rules = parse_rules(text, SOURCE)
    assert [(r.id, r.rule) for r in rules] == [
        ("b", "(counts.click >= 1\n or ids > 1)"),
        ("a", "ids == 1"),
    ]


def test_docs_examples_parse() -> None:
    docs = (REPO / "docs" / "SEGMENTS.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", docs, re.DOTALL)
    assert len(blocks) >= 2
    assert parse_rules(blocks[0], "docs/SEGMENTS.md") == load_rules(None), "shows the defaults"
    for block in blocks[1:]:
        assert parse_rules(block, "docs/SEGMENTS.md")


# --- the expression language ----------------------------------------------------------

FACTS = {"counts.click": 2, "counts.page_view": 5, "interests.sports": 3, "ids": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("counts.click == 2", True, id="eq-true"),
        pytest.param("counts.click == 3", False, id="eq-false"),
        pytest.param("counts.click != 3", True, id="ne-true"),
        pytest.param("counts.click != 2", False, id="ne-false"),
        pytest.param("counts.click < 3", True, id="lt-true"),
        pytest.param("counts.click < 2", False, id="lt-false"),
        pytest.param("counts.click <= 2", True, id="le-true"),
        pytest.param("counts.click <= 1", False, id="le-false"),
        pytest.param("counts.click > 1", True, id="gt-true"),
        pytest.param("counts.click > 2", False, id="gt-false"),
        pytest.param("counts.click >= 2", True, id="ge-true"),
        pytest.param("counts.click >= 3", False, id="ge-false"),
        pytest.param("2 <= counts.click", True, id="literal-on-the-left"),
        pytest.param("1 < counts.click < 3", True, id="chain-true"),
        pytest.param("1 < counts.click < 2", False, id="chain-false-right"),
        pytest.param("2 < counts.click < 3", False, id="chain-false-left"),
        pytest.param("0 <= ids <= counts.click <= counts.page_view", True, id="chain-of-fields"),
        pytest.param("counts.click > 1.5", True, id="float-literal"),
        pytest.param("counts.click > -1", True, id="negative-literal"),
        pytest.param("counts.click == +2", True, id="plus-literal"),
        pytest.param("interests.sports >= 3 and counts.page_view >= 5", True, id="and-true"),
        pytest.param("interests.sports >= 4 and counts.page_view >= 5", False, id="and-false"),
        pytest.param("interests.sports >= 4 or counts.page_view >= 5", True, id="or-true"),
        pytest.param("interests.sports >= 4 or counts.page_view >= 6", False, id="or-false"),
        pytest.param("not counts.click >= 3", True, id="not-true"),
        pytest.param("not counts.click >= 2", False, id="not-false"),
        pytest.param("not not counts.click >= 2", True, id="double-not"),
        pytest.param("ids == 1 or ids == 2 and counts.click == 0", False, id="and-binds-tighter"),
        pytest.param("(ids == 1 or ids == 2) and counts.click == 2", True, id="parentheses"),
        pytest.param("ids == 1 or ids == 2 or ids == 3", True, id="or-of-three"),
        pytest.param(
            "ids > 1 and (not interests.sports < 3 or counts.click == 0)", True, id="nested"
        ),
        pytest.param("counts.click >= 2 # a comment", True, id="comment"),
        pytest.param("  counts.click >= 2  ", True, id="surrounding-space"),
        pytest.param("(counts.click >= 2\n and ids >= 2)", True, id="multi-line-in-parens"),
        pytest.param("1 < 2", True, id="literals-only"),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert rule(text).matches(FACTS) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("counts.click == 0", True, id="count"),
        pytest.param("counts.identify < 1", True, id="identify-count"),
        pytest.param("interests.never_seen == 0", True, id="interest"),
        pytest.param("interests.never_seen >= 1", False, id="interest-not-reached"),
        pytest.param("ids == 0", True, id="ids"),
        pytest.param("not counts.conversion > 0", True, id="under-not"),
    ],
)
def test_missing_facts_read_zero(text: str, expected: bool) -> None:
    assert rule(text).matches({}) is expected
    assert rule(text).matches({"counts.impression": 7, "interests.other": 9}) is expected


@pytest.mark.parametrize("kind", ["page_view", "impression", "click", "conversion", "identify"])
def test_every_event_type_is_a_count(kind: str) -> None:
    assert rule(f"counts.{kind} >= 1").matches({f"counts.{kind}": 1})


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("__import__('os')", "function calls are not allowed", id="import"),
        pytest.param("__import__('os').system('x') == 0", "function calls", id="import-compared"),
        pytest.param("len(ids) > 1", "function calls", id="call"),
        pytest.param("counts.click.real > 0", "unknown field 'counts.click.real'", id="deep-attr"),
        pytest.param("counts.__class__ == 1", "unknown event type", id="dunder"),
        pytest.param("counts[0] > 1", "subscripts are not allowed", id="subscript"),
        pytest.param('"a" == "a"', "strings are not allowed", id="strings"),
        pytest.param("b'a' == 1", "strings are not allowed", id="bytes"),
        pytest.param('f"{ids}" == 1', "strings are not allowed", id="f-string"),
        pytest.param("counts.click + 1 > 2", "arithmetic is not allowed", id="arithmetic"),
        pytest.param("counts.click * 2 > 2", "arithmetic", id="multiplication"),
        pytest.param("-counts.click < 0", "only a number can be signed", id="negated-field"),
        pytest.param("--1 < ids", "only a number can be signed", id="double-negation"),
        pytest.param("~ids < 0", "this expression is not allowed", id="invert"),
        pytest.param("lambda: 1", "lambdas are not allowed", id="lambda"),
        pytest.param("(lambda: 1)() == 1", "function calls", id="lambda-called"),
        pytest.param("[x for x in ()] == 1", "comprehensions are not allowed", id="comprehension"),
        pytest.param("(ids := 1) == 1", "assignments are not allowed", id="walrus"),
        pytest.param("ids if ids else 1 > 0", "conditional expressions", id="if-expression"),
        pytest.param("(1, 2) == 1", "tuples are not allowed", id="tuple"),
        pytest.param("{1: 2} == 1", "dicts are not allowed", id="dict"),
        pytest.param("await ids > 1", "await is not allowed", id="await"),
        pytest.param("(yield ids) > 1", "yield is not allowed", id="yield"),
        pytest.param("ids[1:2] > 1", "subscripts", id="slice"),
        pytest.param("ids in [1, 2]", "operator 'in' is not allowed", id="in"),
        pytest.param("ids not in 1", "operator 'not in'", id="not-in"),
        pytest.param("ids is 1", "operator 'is' is not allowed", id="is"),
        pytest.param("ids is not 1", "operator 'is not'", id="is-not"),
        pytest.param("True", "is not a number", id="true"),
        pytest.param("ids == True", "is not a number", id="bool-literal"),
        pytest.param("ids == None", "is not a number", id="none"),
        pytest.param("ids == 1j", "is not a number", id="complex"),
        pytest.param("ids == ...", "is not a number", id="ellipsis"),
        pytest.param("counts.view >= 1", "unknown event type in 'counts.view'", id="event-type"),
        pytest.param("counts.Click >= 1", "unknown event type", id="event-type-case"),
        pytest.param("count.click >= 1", "unknown field 'count.click'", id="field-typo"),
        pytest.param("clicks >= 1", "unknown field 'clicks'", id="bare-name"),
        pytest.param("counts >= 1", "unknown field 'counts'", id="bare-counts"),
        pytest.param("ids.x >= 1", "unknown field 'ids.x'", id="ids-attribute"),
        pytest.param("os.system >= 1", "unknown field 'os.system'", id="module-attribute"),
        pytest.param("counts.click", "is a number, not a condition", id="bare-field"),
        pytest.param("1", "is a number, not a condition", id="bare-literal"),
        pytest.param("not counts.click", "is a number, not a condition", id="not-number"),
        pytest.param("ids > 1 and 1", "is a number, not a condition", id="and-number"),
        pytest.param("(ids > 1) == (ids > 2)", "is a condition, not a number", id="compare-bools"),
        pytest.param("(ids > 1) + 1 > 0", "arithmetic", id="bool-arithmetic"),
        pytest.param("", "empty rule", id="empty"),
        pytest.param("   ", "empty rule", id="blank"),
        pytest.param("counts.click >=", "syntax error", id="syntax-error"),
        pytest.param("counts.click >= 1; import os", "syntax error", id="statement"),
        pytest.param("import os", "syntax error", id="import-statement"),
        pytest.param("ids > 1\nand ids < 3", "syntax error", id="newline-outside-parens"),
        pytest.param("interests.sports-news > 1", "arithmetic", id="hyphenated-interest"),
        pytest.param("interests.class > 1", "syntax error", id="keyword-interest"),
        pytest.param("ids == 1 and " * 40 + "ids == 1", None, id="long-flat-and-is-fine"),
        pytest.param("not " * (MAX_RULE_DEPTH + 1) + "ids > 0", "nested more than", id="deep"),
        pytest.param("-" * 1_990 + "1 > ids", "nested more than", id="deep-negation"),
        pytest.param("ids > 0 or " * 200 + "ids > 0", "longer than", id="too-long"),
    ],
)
def test_refusals_name_the_segment_and_the_problem(text: str, problem: str | None) -> None:
    if problem is None:
        assert rule(text).matches({"ids": 1})
        return
    error = refusal(text)
    assert (error.source, error.segment) == (SOURCE, "s")
    assert problem in error.problem
    assert str(error).startswith(f"{SOURCE}: segment 's': ")
    assert isinstance(error, ValueError)


def test_refusal_message_matches_the_documented_form() -> None:
    error = refusal("count.click >= 1")
    assert str(error) == (
        "test.toml: segment 's': unknown field 'count.click' "
        "(fields are counts.<type>, interests.<name>, ids)"
    )


def test_syntax_error_gives_the_column() -> None:
    assert "at column" in refusal("counts.click >= >= 1").problem


def test_rule_length_limit_is_inclusive() -> None:
    longest = "ids >=" + " " * (MAX_RULE_CHARS - 7) + "0"
    assert len(longest) == MAX_RULE_CHARS
    assert rule(longest).matches({})
    assert "longer than" in refusal(longest.replace("0", "00")).problem


@pytest.mark.parametrize(
    ("text", "segment", "problem"),
    [
        pytest.param("", None, "no segments defined", id="empty-file"),
        pytest.param("# only a comment\n", None, "no segments defined", id="comment-only"),
        pytest.param("[segments]\n", None, "no segments defined", id="empty-segments"),
        pytest.param('segments = "x"\n', None, "'segments' must be a table", id="segments-str"),
        pytest.param(
            '[segment.a]\nrule = "ids > 0"\n',
            None,
            "unknown top-level key 'segment'",
            id="top-typo",
        ),
        pytest.param('[segments]\na = "ids > 0"\n', "a", "must be a table", id="segment-not-table"),
        pytest.param("[segments.a]\n", "a", "missing 'rule'", id="missing-rule"),
        pytest.param(
            '[segments.a]\ndescription = "d"\n', "a", "missing 'rule'", id="description-only"
        ),
        pytest.param("[segments.a]\nrule = 1\n", "a", "'rule' must be a string", id="rule-number"),
        pytest.param(
            '[segments.a]\nrule = "ids > 0"\ndescription = 3\n',
            "a",
            "'description' must be a string",
            id="description-number",
        ),
        pytest.param(
            '[segments.a]\nrule = "ids > 0"\nrules = "x"\n',
            "a",
            "unknown key 'rules'",
            id="unknown-key",
        ),
        pytest.param(
            '[segments.Big]\nrule = "ids > 0"\n', "Big", "bad segment id", id="uppercase-id"
        ),
        pytest.param(
            '[segments."a b"]\nrule = "ids > 0"\n', "a b", "bad segment id", id="space-id"
        ),
        pytest.param('[segments.""]\nrule = "ids > 0"\n', "", "bad segment id", id="empty-id"),
        pytest.param(
            f'[segments.{"a" * 65}]\nrule = "ids > 0"\n', "a" * 65, "bad segment id", id="long-id"
        ),
        pytest.param(
            '[segments."a\\n"]\nrule = "ids > 0"\n', "a\n", "bad segment id", id="newline-id"
        ),
    ],
)
def test_file_refusals(text: str, segment: str | None, problem: str) -> None:
    error = file_refusal(text)
    assert (error.source, error.segment) == (SOURCE, segment)
    assert problem in error.problem
    assert str(error).startswith(f"{SOURCE}: ")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("[segments.a]\nrule = \n", 2, id="missing-value"),
        pytest.param('[segments.a\nrule = "ids > 0"\n', 1, id="unclosed-table"),
        pytest.param(
            '[segments.a]\nrule = "ids > 0"\n[segments.a]\nrule = "ids > 1"\n', 3, id="duplicate-id"
        ),
        pytest.param('[segments.a]\nrule = "ids > 0"\nrule = "ids > 1"\n', 3, id="duplicate-key"),
    ],
)
def test_toml_errors_name_the_file_and_line(text: str, line: int) -> None:
    error = file_refusal(text)
    assert error.segment is None
    assert str(error).startswith(f"{SOURCE}: invalid TOML: ")
    assert f"line {line}" in str(error)


def test_segment_ids_are_unique_and_valid() -> None:
    ids = [r.id for r in load_rules(None)]
    assert len(ids) == len(set(ids))
    for segment_id in ["a", "0", "a-b_c", "x" * 64]:
        assert SegmentRule(segment_id, "", "ids > 0").id == segment_id


def test_direct_construction_checks_the_rule() -> None:
    with pytest.raises(RuleError, match=r"^segment 'fans': unknown event type"):
        SegmentRule("fans", "", "counts.likes > 1")


def test_rules_compare_by_text_not_by_compiled_form() -> None:
    assert rule("ids > 1") == rule("ids > 1")
    assert hash(rule("ids > 1")) == hash(rule("ids > 1"))
    assert rule("ids > 1") != rule("ids > 2")
    assert "_predicate" not in repr(rule("ids > 1"))


def test_rules_pickle_by_their_text() -> None:
    original = rule("ids > 1")
    copy = pickle.loads(pickle.dumps(original))
    assert copy == original
    assert copy.matches({"ids": 2}) and not copy.matches({"ids": 1})


# --- evaluation and changes -----------------------------------------------------------


def test_evaluate_returns_matched_ids() -> None:
    rules = parse_rules(
        '[segments.one]\nrule = "ids >= 1"\n[segments.two]\nrule = "ids >= 2"\n'
        '[segments.never]\nrule = "ids < 0"\n',
        SOURCE,
    )
    assert evaluate(rules, {"ids": 2}) == frozenset({"one", "two"})
    assert evaluate(rules, {}) == frozenset()
    assert evaluate((), {"ids": 2}) == frozenset()


@pytest.mark.parametrize(
    ("before", "after", "entered", "exited"),
    [
        pytest.param([], [], [], [], id="nothing"),
        pytest.param(["a"], ["a"], [], [], id="no-op"),
        pytest.param(["b", "a"], ("a", "b"), [], [], id="no-op-reordered"),
        pytest.param([], ["engaged", "clickers"], ["clickers", "engaged"], [], id="enter-sorted"),
        pytest.param(["engaged", "clickers"], [], [], ["clickers", "engaged"], id="exit-sorted"),
        pytest.param(["a", "c"], ["c", "b"], ["b"], ["a"], id="enter-and-exit"),
        pytest.param(frozenset({"x"}), {"x", "y"}, ["y"], [], id="sets"),
        pytest.param(["a", "a"], ["b", "b"], ["b"], ["a"], id="duplicates-collapse"),
    ],
)
def test_changes(
    before: list[str], after: list[str], entered: list[str], exited: list[str]
) -> None:
    assert changes(before, after) == (entered, exited)


def test_changes_accepts_generators() -> None:
    assert changes((s for s in ["a"]), (s for s in ["b"])) == (["b"], ["a"])
