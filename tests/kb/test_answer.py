"""The auto-answer decision: threshold, gap, ``auto: false``, and the caller's P1/secret veto."""

from __future__ import annotations

import pytest

from kb import Answerer, Hit, KnowledgeBase, Method, Policy, Reason, Retriever, decide

POLICY = Policy(min_score=0.5, min_gap=0.1)


def _hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(a, s) for a, s in pairs]


def test_sent_when_score_and_gap_both_clear(fixture_kb: KnowledgeBase) -> None:
    answer = decide(_hits(("password-reset", 0.6), ("api-keys", 0.45)), fixture_kb, POLICY, "ko")
    assert answer.reason is Reason.SENT
    assert answer.send is not None and answer.send.article.id == "password-reset"
    assert answer.send.variant.lang == "ko"  # the user's language
    assert answer.gap == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("hits", "reason"),
    [
        ((("password-reset", 0.49), ("api-keys", 0.1)), Reason.LOW_SCORE),
        ((("password-reset", 0.9), ("api-keys", 0.81)), Reason.SMALL_GAP),
        ((("p2p-disputes", 0.99), ("api-keys", 0.1)), Reason.NOT_AUTO),
    ],
)
def test_not_sent(fixture_kb: KnowledgeBase, hits: tuple[tuple[str, float], ...], reason: Reason) -> None:
    answer = decide(_hits(*hits), fixture_kb, POLICY, "en")
    assert answer.reason is reason and answer.send is None
    assert answer.suggestions[0].article.id == hits[0][0]  # the agent still sees it first


def test_the_callers_p1_and_secret_verdicts_veto_a_sure_answer(fixture_kb: KnowledgeBase) -> None:
    sure = _hits(("password-reset", 0.99), ("api-keys", 0.1))
    assert decide(sure, fixture_kb, POLICY, "en", p1=True).reason is Reason.P1
    assert decide(sure, fixture_kb, POLICY, "en", sensitive=True).reason is Reason.SENSITIVE
    assert decide(sure, fixture_kb, POLICY, "en", p1=True).suggestions[0].article.id == "password-reset"


def test_auto_false_is_never_sent_whatever_the_thresholds(fixture_kb: KnowledgeBase) -> None:
    answerer = Answerer(Retriever(fixture_kb, Method("lexical")), Policy(min_score=-1.0, min_gap=-1.0))
    for text, lang in [("pagué pero no liberan las monedas P2P", "es"), ("p2p seller did not release coins", "en")]:
        answer = answerer.answer(text, lang)
        assert answer.suggestions[0].article.id == "p2p-disputes"
        assert answer.send is None and answer.reason is Reason.NOT_AUTO


def test_three_suggestions_in_the_users_language(fixture_kb: KnowledgeBase) -> None:
    answerer = Answerer(Retriever(fixture_kb, Method("lexical")), POLICY)
    answer = answerer.answer("提现要多久", "zh")
    assert answer.suggestions[0].article.id == "withdrawal-times"
    assert len(answer.suggestions) == 3
    # password-reset has zh-Hant, not zh; api-keys has English only.
    langs = {s.article.id: s.variant.lang for s in answer.suggestions}
    assert langs == {"withdrawal-times": "zh", "password-reset": "zh-Hant", "api-keys": "en"}


def test_an_empty_ranking_sends_nothing(fixture_kb: KnowledgeBase) -> None:
    answer = decide([], fixture_kb, POLICY, "en")
    assert answer.send is None and answer.reason is Reason.EMPTY and answer.suggestions == ()
