"""Tests for rules.normalize: the transform, the offset map and word edges."""

from __future__ import annotations

import itertools
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.normalize import (
    _T2S,
    _T2S_KEYS_RE,
    Normalized,
    _transform,
    has_word_edges,
    is_word_char,
    normalize,
    normalize_keyword,
)


def test_fullwidth_and_traditional_fold_to_keyword_form() -> None:
    assert normalize("ＢＴＣ提現").text == "btc提现"
    assert normalize("我的帳戶").text == normalize_keyword("我的账户")
    assert normalize_keyword("提現") == normalize_keyword("提现") == "提现"
    assert normalize("護照認證被拒絕").text == "护照认证被拒绝"


def test_casefold_not_lower() -> None:
    assert normalize("STRASSE").text == normalize_keyword("Straße")
    assert normalize_keyword("ΟΔΟΣ") == normalize_keyword("οδος")


def test_identity_mapping_is_none() -> None:
    assert normalize("Hello BTC").offsets is None
    assert normalize("充币未到账，ＵＳＤＴ").offsets is None  # 1:1 although not NFKC-normal
    n = normalize("Hello")
    assert n.span_to_original(1, 3) == (1, 3)


def test_expansion_offsets_and_span() -> None:
    n = normalize("Straße ok")
    assert n.text == "strasse ok"
    assert n.offsets == (0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9)
    # "ss" is the whole "ß"; a match of one "s" of it widens to the whole character
    assert n.span_to_original(4, 6) == (4, 5)
    assert n.span_to_original(5, 6) == (4, 5)
    assert n.span_to_original(8, 10) == (7, 9)
    assert n.span_to_original(3, 3) == (3, 3)


def test_composition_offsets() -> None:
    original = "cafe\u0301 ok"  # decomposed é
    n = normalize(original)
    assert n.text == "café ok"
    start, end = n.span_to_original(0, 4)
    assert original[start:end] == "cafe\u0301"
    start, end = n.span_to_original(5, 7)
    assert original[start:end] == "ok"


def test_ligature_and_squared_forms() -> None:
    n = normalize("㈱ ﬁat")
    assert n.text == "(株) fiat"
    assert n.span_to_original(4, 8) == (2, 5)


def _check(original: str, n: Normalized) -> None:
    assert n.text == _transform(original)
    if n.offsets is None:
        assert len(n.text) == len(original)
        return
    offs = n.offsets
    assert len(offs) == len(n.text) + 1
    assert offs[-1] == len(original)
    assert all(a <= b for a, b in itertools.pairwise(offs))
    # Every normalised character comes from the original segment it points at.
    for i in range(len(n.text)):
        start, end = n.span_to_original(i, i + 1)
        assert n.text[i] in _transform(original[start:end]) or start == end


_chars = st.characters(
    codec="utf-8",
    categories=("L", "M", "N", "P", "S", "Zs"),
)
_special = st.sampled_from(list("ßﬁ㈱İ\u0301\u0308\u0344ｶﾞ\u1100\u1161\u11a8é帳著"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_chars, _special), max_size=12).map("".join))
def test_offsets_property(original: str) -> None:
    _check(original, normalize(original))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_matches_reference_transform(original: str) -> None:
    expected = unicodedata.normalize("NFKC", original).casefold()
    assert len(normalize(original).text) == len(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我的帐户被冻结了", "我的账户被冻结了"),  # 帐: only the folding on top of zhconv's table changes it
        ("提币一直没到账，區块确认了", "提币一直没到账,区块确认了"),  # one Traditional character among Simplified
        ("\U0002005e字", "\U0002003e字"),  # past plane 0
    ],
)
def test_one_converted_character_is_enough(text: str, expected: str) -> None:
    assert normalize(text).text == expected


def test_t2s_gate_covers_every_converted_character() -> None:
    # normalize() skips the T->S table when this class finds nothing: it must hold every key.
    missed = [hex(cp) for cp in _T2S if _T2S_KEYS_RE.search(chr(cp)) is None]
    assert missed == []
    assert normalize("臺灣帳戶").text == "台湾账户"
    assert normalize("Ｐривет 안녕").text == "pривет 안녕"


def test_is_word_char() -> None:
    for ch in "aZ09éệжΩ\u0301":
        assert is_word_char(ch), ch
    for ch in "提现ひカ한 ,._-!，。😀ไ":
        assert not is_word_char(ch), ch


def test_word_edges() -> None:
    text = "我的btc提现"
    i = text.index("btc")
    assert has_word_edges(text, i, i + 3)
    assert not has_word_edges("bitcoin", 0, 3)
    assert not has_word_edges("xbtc", 1, 4)
    assert has_word_edges("(btc)", 1, 4)
    assert has_word_edges("usdt_trc20", 5, 10)
    t = "вывод средств"
    assert has_word_edges(t, 0, 5)
    assert not has_word_edges("выводы", 0, 5)
    # CJK keyword: plain substring, whatever surrounds it
    assert has_word_edges("abc提现def", 3, 5)
    # Korean particles attach to nouns: 비트코인 matches in 비트코인을
    assert has_word_edges("비트코인을", 0, 4)
    assert has_word_edges("", 0, 0)
