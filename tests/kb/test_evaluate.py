"""The evaluation table and the calibration, on a tiny case computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb import Hit, KBError, KnowledgeBase, Policy, Question, load_question_files, load_questions
from kb.calibrate import Targets, calibrate
from kb.evaluate import Ranked, folds_of, format_table, table


def _r(qid: str, lang: str, label: str | None, *hits: tuple[str, float]) -> Ranked:
    return Ranked(Question(qid, lang, "text", label), tuple(Hit(a, s) for a, s in hits))


# By hand, with min_score 0.5 and min_gap 0.1:
#   en: q1 right and sent; q2 wrong and sent; q3 right, gap 0.05: not sent; q4 unanswerable, sent;
#   ru: q5 right but p2p-disputes is auto: false, not sent; q6 unanswerable, score 0.3: not sent;
#       q7 wrong, not sent (score 0.4).
RANKED = [
    _r("q1", "en", "password-reset", ("password-reset", 0.9), ("api-keys", 0.2)),
    _r("q2", "en", "api-keys", ("withdrawal-times", 0.7), ("api-keys", 0.5)),
    _r("q3", "en", "api-keys", ("api-keys", 0.8), ("password-reset", 0.75)),
    _r("q4", "en", None, ("api-keys", 0.6), ("password-reset", 0.1)),
    _r("q5", "ru", "p2p-disputes", ("p2p-disputes", 0.9), ("api-keys", 0.1)),
    _r("q6", "ru", None, ("api-keys", 0.3), ("password-reset", 0.1)),
    _r("q7", "ru", "api-keys", ("password-reset", 0.4), ("api-keys", 0.1)),
]


def test_table_counts_by_hand(fixture_kb: KnowledgeBase) -> None:
    en, ru, total = table(RANKED, fixture_kb, Policy(0.5, 0.1))
    assert (en.lang, en.answerable, en.top1, en.sent, en.sent_wrong, en.unanswerable, en.unanswerable_sent) == (
        "en", 3, 2, 2, 1, 1, 1,
    )  # fmt: skip
    assert (ru.answerable, ru.top1, ru.sent, ru.sent_wrong, ru.unanswerable, ru.unanswerable_sent) == (2, 1, 0, 0, 1, 0)
    assert (total.answerable, total.top1, total.sent, total.sent_wrong) == (5, 3, 2, 1)
    assert total.top1_accuracy == pytest.approx(3 / 5)
    assert total.auto_rate == pytest.approx(2 / 5)
    assert total.wrong_rate == pytest.approx(1 / 2)
    assert total.unanswerable_rate == pytest.approx(1 / 2)
    assert ru.wrong_rate is None  # nothing sent: no rate, not 0%
    text = format_table([en, ru, total])
    assert "| all | 5 | 60.0% (3) | 2 | 40.0% | 50.0% (1) | 2 | 50.0% (1) |" in text
    assert json.dumps(total.to_dict())  # JSON-ready


def test_calibration_by_hand(fixture_kb: KnowledgeBase) -> None:
    # Within 0% wrong and 0% unanswerable: a score of at least 0.8 leaves out q2 (wrong, 0.7) and
    # q4 (unanswerable, 0.6) and sends q1 and q3; the largest gap threshold keeping q3 is its 0.05.
    policy = calibrate(RANKED, fixture_kb, Targets(0.0, 0.0))
    assert policy.min_score == 0.8 and policy.min_gap == pytest.approx(0.05)
    rows = table(RANKED, fixture_kb, policy)
    assert (rows[-1].sent, rows[-1].sent_wrong, rows[-1].unanswerable_sent) == (2, 0, 0)
    # Allowing half of each: a score of 0.6 also sends q1 and q3 (and q2, q4): no more right
    # answers, so the tie goes to the stricter pair found first.
    assert calibrate(RANKED, fixture_kb, Targets(0.5, 0.5)) == policy
    # A gap of 0.06 is what q3 lacks: only q1 is sent then.
    assert table(RANKED, fixture_kb, Policy(0.8, 0.06))[-1].sent == 1


def test_calibration_that_cannot_send_anything_sends_nothing(fixture_kb: KnowledgeBase) -> None:
    wrong_only = [RANKED[1], RANKED[3]]
    policy = calibrate(wrong_only, fixture_kb, Targets(0.0, 0.0))
    assert table(wrong_only, fixture_kb, policy)[-1].sent == 0


def test_bad_question_lines_are_named(tmp_path: Path, fixture_kb: KnowledgeBase) -> None:
    path = tmp_path / "q.jsonl"
    lines = [
        '{"id": "a", "lang": "en", "text": "hi", "article": null}',
        '{"id": "a", "lang": "xx", "text": " ", "article": "nope"}',
        "not json",
        '{"id": "b", "lang": "en", "text": "hi"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(KBError) as info:
        load_questions(path, fixture_kb)
    errors = info.value.errors
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:2"] * 4 + [f"{path}:3", f"{path}:4"]
    assert "lang 'xx'" in errors[0] and "empty text" in errors[1] and "repeated" in errors[2]
    assert "article 'nope' is not in the knowledge base" in errors[3]
    assert "missing required field `article`" in errors[5]


def _write(path: Path, *questions: tuple[str, str | None]) -> Path:
    lines = [json.dumps({"id": qid, "lang": "en", "text": "how", "article": a}) for qid, a in questions]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_question_files_are_one_set(tmp_path: Path, fixture_kb: KnowledgeBase) -> None:
    tune = _write(tmp_path / "tune.jsonl", ("u1", "api-keys"), ("u2", None))
    more = _write(tmp_path / "more.jsonl", ("w1", None))
    assert [q.id for q in load_question_files([tune, more], fixture_kb)] == ["u1", "u2", "w1"]
    # An id another file already used, and every other file's own problems, all named.
    clash = _write(tmp_path / "clash.jsonl", ("w2", None), ("u2", "api-keys"))
    bad = _write(tmp_path / "bad.jsonl", ("x1", "nope"))
    with pytest.raises(KBError) as info:
        load_question_files([tune, clash, bad], fixture_kb)
    assert info.value.errors == [
        f"{clash}: id 'u2' repeated (also in {tune})",
        f"{bad}:1: article 'nope' is not in the knowledge base",
    ]


def test_folds_never_ask_a_model_that_learned_the_question() -> None:
    questions = [Question(f"u{i}", "en", "how", None) for i in range(7)]
    extra = [Question(f"w{i}", "en", "how", None) for i in range(3)]
    splits = folds_of(questions, questions + extra, folds=3)
    assert sorted(q.id for held, _ in splits for q in held) == sorted(q.id for q in questions)
    for held, learned in splits:
        assert not {q.id for q in held} & {q.id for q in learned}
        # Everything not held is learned: the other folds and the examples that are not asked.
        assert len(held) + len(learned) == 10 and {q.id for q in extra} <= {q.id for q in learned}
    # Held-out questions (none of them an example) are asked of one model of all the examples.
    assert folds_of(extra, questions) == [(extra, questions)]
