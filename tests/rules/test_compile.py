"""The compiled matcher: gates, regex prefilters, RE2 refusals, keyword tables."""

from __future__ import annotations

import pytest

from rules import Engine, MessageIn
from rules.conditions import AllNode, KeywordsNode
from rules.normalize import normalize
from rules.prefilter import lead_excludes, leading_words, required_alnum_run, required_literals
from rules.regex import compile_regex, regex_error, search_utf8

from .conftest import SAMPLES, ungated


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
        (r"\pL+x", None),  # RE2-only syntax, read as some class: "x" alone is too short
        ("ab?", None),  # one-character literal: useless as a gate
        ("被(人|别人)[^，]{0,3}(登|转)", {"被人", "被别人"}),  # short alternatives multiplied out
        (r"\d+% ?/(day|天)", {"%/day", "%/天", "% /day", "% /天"}),
        (r"kimli[gğk]", {"kimlig", "kimliğ", "kimlik"}),
        (r"^[\s\p{P}]*(hello|hola)[\pL\pN]{0,3}$", {"hello", "hola"}),  # \p{...} is a class
        (r"\x{88ab}\x{76d7}", {"被盗"}),
    ],
)
def test_required_literals(pattern: str, expected: set[str] | None) -> None:
    got = required_literals(pattern)
    assert (set(got) if got is not None else None) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"\b(bc1[02-9ac-hj-np-z]{25,62}|[13][1-9a-km-z]{25,34}|0x[0-9a-f]{40})\b", 26),
        (r"tx:\s*[0-9a-f]{64}", 64),
        (r"order\s*#?\d{6,}", 6),
        (r"ab\d{3}", 5),
        ("[a-z0-9]{2,}", 2),
        ("a*b", 1),
        (r"(?i)[a-z]{30}", 0),  # RE2's case folding adds the Kelvin sign and the long s
        (r"[\pL]{30}", 0),  # Unicode letters are not ASCII
        ("[^ ]{30}", 0),
        (r"\w{30}", 0),
        ("(abc)?x", 1),
    ],
)
def test_required_alnum_run(pattern: str, expected: int) -> None:
    assert required_alnum_run(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "matching"),
    [
        ("не (пришл|поступ)|завис", ["не пришло", "не поступили", "всё зависло"]),
        ("(12|24) ?(слов|words)", ["12 слов", "24words"]),
        ("usdt(-| )?(trc|erc)20", ["usdt-trc20", "usdt erc20"]),
        ("(?i)ВЗЛОМ|Kredit", ["взлом", "мой kredit"]),
        ("被(人|别人)[^，]{0,3}(登|转)", ["我被人登了", "被别人转走"]),
        (r"\d+ ?% ?/ ?(day|天)", ["10%/day", "5 % / 天"]),
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
    return make_engine(body)._compiled


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
        "det": True,  # on "the first detector pass found a txid"
    }
    assert c.ungated == frozenset({2, 4})
    assert c.eager_kinds == frozenset({"txid"})
    assert set(c.detector_gates) == {"txid"}
    assert c.rules[5].gate == frozenset({c.detector_gates["txid"]})


def test_address_shaped_regex_is_gated_on_a_long_alphanumeric_run(make_engine) -> None:  # type: ignore[no-untyped-def]
    c = compiled(
        make_engine,
        "  - {id: addr, when: {regex: '\\b(t[1-9a-km-z]{33}|0x[0-9a-f]{40})\\b'}, then: {tags: [x]}}\n"
        "  - {id: short, when: {regex: '[a-z0-9]{2,}'}, then: {tags: [x]}}\n",
    )
    assert c.run_gates == ((34, len(c.keywords)),)
    assert c.rules[0].gate == frozenset({len(c.keywords)})
    assert c.ungated == frozenset({1})  # a 2-character run is in nearly every message: no gate


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
    cond = c.rules[0].condition
    assert isinstance(cond, AllNode)
    assert [type(ch).__name__ for ch in cond.children] == ["FieldNode", "KeywordsNode", "RegexNode", "DetectorNode"]


def test_keywords_are_shared_and_normalised(make_engine) -> None:  # type: ignore[no-untyped-def]
    c = compiled(
        make_engine,
        "  - {id: a, when: {contains_any: [USDT, 提現]}, then: {tags: [x]}}\n"
        "  - {id: b, when: {contains_any: [usdt, ＵＳＤＴ]}, then: {tags: [x]}}\n",
    )
    assert sorted(k.text for k in c.keywords) == sorted(["usdt", "提现"])
    assert {k.text: k.word_edges for k in c.keywords} == {"usdt": True, "提现": False}
    kw = c.rules[1].condition
    assert isinstance(kw, KeywordsNode) and len(kw.keyword_ids) == 1


def test_gating_gives_the_same_decisions_as_evaluating_every_rule(make_engine) -> None:  # type: ignore[no-untyped-def]
    body = (
        "  - {id: a, when: [{contains_any: [usdt]}, {contains_any: [withdraw, 提现]}], then: {tags: [a]}}\n"
        "  - {id: b, when: {any: [{contains_any: [kyc]}, {regex: 'verif(y|ication)'}]}, then: {tags: [b]}}\n"
        "  - {id: c, when: {not: {contains_any: [thanks]}}, then: {tags: [c]}}\n"
        "  - {id: d, when: {contains_all: [usdt, trc20]}, then: {tags: [d], stop: true}}\n"
        "  - {id: e, when: {regex: 'e\\d{4}'}, then: {tags: [e]}}\n"
        "  - {id: f, when: {any: [{detector: address}, {regex: '\\bt[1-9a-km-z]{33}\\b'}]}, then: {tags: [f]}}\n"
        "  - {id: g, when: {detector: [txid, seed_phrase]}, then: {tags: [g]}}\n"
    )
    engine = make_engine(body)
    assert engine._compiled.ungated == frozenset({2, 4})  # `not`, and a one-letter literal
    brute = ungated(engine)
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
        "send to TXyz1234567890abcdefghijkmnopqrst please",  # address-shaped, bad checksum
        "send to TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t please",  # valid TRON address
        "tx " + "ab" * 32,
        "ｔｘ " + "ＡＢ" * 20,  # full width: the run only exists after normalisation
        "abandon " * 11 + "about",
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


def test_default_rules_gating_is_exact_on_the_samples() -> None:
    # The default set gates all but its greeting and VIP-sender rules; evaluating every rule on
    # every sample gives the same decisions.
    import json

    from router.rules_samples import message_from_json

    engine = Engine.default()
    assert {engine._compiled.rules[i].id for i in engine._compiled.ungated} == {"greeting", "vip-sender"}
    samples = SAMPLES
    if not samples.exists():
        pytest.skip("samples not available")
    brute = ungated(engine)
    for line in samples.read_text(encoding="utf-8").splitlines():
        if line.strip():
            m = message_from_json(json.loads(line))
            assert engine.evaluate(m) == brute.evaluate(m)


_GREETING = (
    r"^[\s\p{P}\p{S}]*(hi|hello|你好|привет|안녕|buenos días)([\s\p{P}\p{S}]+[\pL\pN]{1,10}){0,3}[\s\p{P}\p{S}]*$"
)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (_GREETING, ("buenos días", "hello", "hi", "привет", "你好", "안녕")),
        (r"^(yo|hey)\b", ("hey", "yo")),
        (r"^(hi|yo)|foo", None),  # "^" binds the first branch only
        (r"^[\pL]*(hi)", None),  # leading letters: not only separators
        (r"^(h.i)", None),  # not a plain word
        (r"^(hi|)x", None),  # an empty word
        (r"(?m)^(hi)", None),  # flags: "^" may be a line start
        (r"(hi)", None),  # not anchored
    ],
)
def test_leading_words(pattern: str, expected: tuple[str, ...] | None) -> None:
    assert leading_words(pattern) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hi",
        "hi there",
        "hello, anyone",
        "  !! 你好",
        "你好 在吗",
        "привет всем",
        "안녕",
        "buenos días",
        "buenos",
        "hilfe bitte",
        "help me",
        "my withdrawal is stuck",
        "我的提现没到",
        "вывод не пришёл",
        "출금이 안 돼요",
        "¡hola",
        "١٢ hi",
        "ａｂｃ",
        "é hi",
        "123 hi",
        "\u3000hi",
        "…hi",
    ],
)
def test_lead_exclusion_never_hides_a_match(text: str) -> None:
    words = leading_words(_GREETING)
    assert words is not None
    text = normalize(text).text
    matched = search_utf8(compile_regex(_GREETING), text.encode("utf-8")) is not None
    if lead_excludes(words, text):
        assert not matched


def test_lead_exclusion_skips_ordinary_messages() -> None:
    words = leading_words(_GREETING)
    assert words is not None
    assert lead_excludes(words, "my withdrawal is stuck")
    assert lead_excludes(words, "我的提现没到")
    assert not lead_excludes(words, "hi there")  # starts with a word: RE2 decides
    assert not lead_excludes(words, "!! help")  # starts with a separator: RE2 decides
    assert not lead_excludes(words, "é")  # not a letter known to be no separator: RE2 decides
