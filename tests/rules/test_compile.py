"""The compiled matcher: gates, regex prefilters, RE2 refusals, keyword tables."""

from __future__ import annotations

import dataclasses

import pytest

from rules import Engine, MessageIn
from rules.compile import AllC, KeywordsC, compile_regex, regex_error, required_literals
from rules.normalize import normalize


def test_re2_refusals_say_why() -> None:
    assert "backreferences" in (regex_error(r"(a)\1") or "")
    assert "lookahead/lookbehind" in (regex_error(r"(?=a)b") or "")
    assert "lookahead/lookbehind" in (regex_error(r"(?<!a)b") or "")
    assert "over 1000" in (regex_error(r"a{1001}") or "")
    assert "missing ]" in (regex_error("[") or "")
    assert regex_error(r"(a+)+$") is None  # fine in RE2: linear time


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("взлом|украл", {"взлом", "украл"}),
        (r"order\s*#\d+", {"order"}),
        (r"e10001\D", {"e10001"}),
        ("(?i)ABC", {"abc"}),  # the text is case-folded: so are the literals
        ("a*b", None),  # a literal that may be absent
        (r"\d+%", None),
        (r"\pL+x", None),  # RE2-only syntax
        ("ab?", None),  # one-character literal: useless as a gate
    ],
)
def test_required_literals(pattern: str, expected: set[str] | None) -> None:
    got = required_literals(pattern)
    assert (set(got) if got is not None else None) == expected


@pytest.mark.parametrize(
    ("pattern", "matching"),
    [
        ("не (пришл|поступ)|завис", ["не пришло", "не поступили", "всё зависло"]),
        ("(12|24) ?(слов|words)", ["12 слов", "24words"]),
        ("usdt(-| )?(trc|erc)20", ["usdt-trc20", "usdt erc20"]),
        ("(?i)ВЗЛОМ|Kredit", ["взлом", "мой kredit"]),
    ],
)
def test_required_literals_are_sound(pattern: str, matching: list[str]) -> None:
    # Whatever literals are chosen, every (normalised) text the regex matches contains one.
    literals = required_literals(pattern)
    assert literals is not None
    for text in matching:
        assert text == normalize(text).text
        assert compile_regex(pattern).search(text) is not None
        assert any(lit in text for lit in literals), (text, literals)


def compiled(make_engine, body: str):  # type: ignore[no-untyped-def]
    return make_engine(body)._c


def test_gates_follow_the_condition_tree(make_engine) -> None:  # type: ignore[no-untyped-def]
    c = compiled(
        make_engine,
        "  - {id: kw, when: {contains_any: [a1, b1]}, then: {tags: [x]}}\n"
        "  - {id: all, when: [{channel: x}, {contains_any: [c1]}], then: {tags: [x]}}\n"
        "  - {id: any-mixed, when: {any: [{channel: x}, {contains_any: [d1]}]}, then: {tags: [x]}}\n"
        "  - {id: any-kw, when: {any: [{contains_any: [e1]}, {regex: 'fx1+g'}]}, then: {tags: [x]}}\n"
        "  - {id: not, when: {not: {contains_any: [g1]}}, then: {tags: [x]}}\n"
        "  - {id: det, when: {detector: txid}, then: {tags: [x]}}\n",
    )
    gated = {r.id: r.gate is not None for r in c.rules}
    assert gated == {
        "kw": True,
        "all": True,
        "any-mixed": False,
        "any-kw": True,
        "not": False,
        "det": False,
    }
    assert c.ungated == frozenset({2, 4, 5})
    assert c.eager_kinds == frozenset({"txid"})


def test_all_is_gated_on_its_rarest_keyword(make_engine) -> None:  # type: ignore[no-untyped-def]
    body = "".join(
        f"  - {{id: r{i}, when: [{{contains_any: [usdt]}}, {{contains_any: [e{i}]}}], then: {{tags: [x]}}}}\n"
        for i in range(5)
    )
    c = compiled(make_engine, body)
    texts = [k.text for k in c.keywords]
    for rule in c.rules:
        assert rule.gate is not None
        assert {texts[k] for k in rule.gate} == {f"e{rule.index}"}


def test_contains_all_is_gated_on_one_keyword(make_engine) -> None:  # type: ignore[no-untyped-def]
    c = compiled(make_engine, "  - {id: r, when: {contains_all: [aa, bb]}, then: {tags: [x]}}\n")
    assert c.rules[0].gate is not None and len(c.rules[0].gate) == 1


def test_cheap_conditions_are_tried_first(make_engine) -> None:  # type: ignore[no-untyped-def]
    c = compiled(
        make_engine,
        "  - {id: r, when: [{regex: 'x+y'}, {detector: email}, {contains_any: [z]},"
        " {channel: t}], then: {tags: [x]}}\n",
    )
    cond = c.rules[0].cond
    assert isinstance(cond, AllC)
    assert [type(ch).__name__ for ch in cond.children] == ["FieldC", "KeywordsC", "RegexC", "DetectorC"]


def test_keywords_are_shared_and_normalised(make_engine) -> None:  # type: ignore[no-untyped-def]
    c = compiled(
        make_engine,
        "  - {id: a, when: {contains_any: [USDT, 提現]}, then: {tags: [x]}}\n"
        "  - {id: b, when: {contains_any: [usdt, ＵＳＤＴ]}, then: {tags: [x]}}\n",
    )
    assert sorted(k.text for k in c.keywords) == sorted(["usdt", "提现"])
    assert {k.text: k.word_edges for k in c.keywords} == {"usdt": True, "提现": False}
    kw = c.rules[1].cond
    assert isinstance(kw, KeywordsC) and len(kw.kw_ids) == 1


def test_gating_gives_the_same_decisions_as_evaluating_every_rule(make_engine) -> None:  # type: ignore[no-untyped-def]
    body = (
        "  - {id: a, when: [{contains_any: [usdt]}, {contains_any: [withdraw, 提现]}], then: {tags: [a]}}\n"
        "  - {id: b, when: {any: [{contains_any: [kyc]}, {regex: 'verif(y|ication)'}]}, then: {tags: [b]}}\n"
        "  - {id: c, when: {not: {contains_any: [thanks]}}, then: {tags: [c]}}\n"
        "  - {id: d, when: {contains_all: [usdt, trc20]}, then: {tags: [d], stop: true}}\n"
        "  - {id: e, when: {regex: 'e\\d{4}'}, then: {tags: [e]}}\n"
    )
    engine = make_engine(body)
    brute = Engine.__new__(Engine)
    brute.__dict__.update(engine.__dict__)
    brute._c = dataclasses.replace(engine._c, ungated=frozenset(range(len(engine._c.rules))))
    for text in [
        "usdt withdraw",
        "USDT trc20 提现",
        "kyc",
        "please verify",
        "thanks",
        "e1234",
        "verification thanks usdt",
        "nothing",
        "我的usdt提现",
    ]:
        m = MessageIn(channel="telegram", text=text, language="en")
        assert engine.evaluate(m) == brute.evaluate(m), text


def test_build_is_fast_enough_for_hot_reload(make_engine) -> None:  # type: ignore[no-untyped-def]
    import time

    body = "".join(
        f"  - {{id: r{i}, when: [{{contains_any: [e{i}]}}, {{contains_any: [usdt, btc]}}], then: {{tags: [t{i}]}}}}\n"
        for i in range(1000)
    )
    start = time.perf_counter()
    make_engine(body)
    assert time.perf_counter() - start < 2.0


def test_regex_literal_equal_to_a_keyword_does_not_hide_either_rule() -> None:
    """Regression: the automaton was keyed by text, so a regex prefilter literal equal to another
    rule's keyword overwrote that keyword's id and one of the two rules never became a candidate."""
    source = """
version: 1
groups: [{id: a, name: A}]
defaults: {group: a, priority: P3}
rules:
  - {id: ra, when: {regex: 'yatır|çekme'}, then: {tags: [ra]}}
  - {id: rb, when: {contains_any: [çekme]}, then: {tags: [rb]}}
"""
    for text in (source, source.replace("  - {id: ra", "  - {id: rz").replace("[ra]", "[rz]")):
        engine = Engine.from_yaml(text, "t.yaml")
        tags = engine.evaluate(MessageIn(channel="telegram", text="Para çekme talebim beklemede")).tags
        assert "rb" in tags and ("ra" in tags or "rz" in tags)
