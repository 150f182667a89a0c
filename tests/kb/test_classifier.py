"""The question model: learned from labelled questions, out-of-fold ranking, the shipped answerer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import kb
from kb import KnowledgeBase, Method, Question, Retriever
from kb.classifier import QuestionModel
from kb.evaluate import rank_out_of_fold
from router.cli import main
from tests.kb.conftest import FIXTURES

# Phrasings that share no word with the fixture articles (the model must learn them).
EXAMPLES = [
    ("withdrawal-times", "my coins are stuck on the way out, spinning for ages"),
    ("withdrawal-times", "cash-out still spinning after two hours"),
    ("password-reset", "cannot remember the secret word to get in"),
    ("password-reset", "lost the magic phrase I sign in with"),
    (None, "what will bitcoin be worth next year"),
    (None, "thanks, bye"),
]


def test_model_learns_separable_classes() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8)).astype(np.float32)
    x = np.concatenate([c + 0.05 * rng.normal(size=(10, 8)) for c in centres]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = ["a"] * 10 + ["b"] * 10 + [None] * 10
    model = QuestionModel.train(x, labels, ["a", "b"])
    assert model.classes == ("a", "b", None)
    p = model.probabilities(x[15])
    assert p.sum() == pytest.approx(1.0, abs=1e-5) and int(np.argmax(p)) == 1
    assert int(np.argmax(model.probabilities(x[25]))) == 2  # "no article"


def test_examples_teach_the_retriever_users_words(fixture_kb: KnowledgeBase) -> None:
    question = ("coins stuck on the way out, spinning", "en")
    plain = Retriever(fixture_kb, Method("dense", model_weight=0))
    taught = Retriever(fixture_kb, Method("dense", model_weight=1.0), examples=EXAMPLES)
    assert taught.search(*question)[0].article == "withdrawal-times"
    gain = taught.scores(*question) - plain.scores(*question)
    assert np.argmax(gain) == fixture_kb.ids().index("withdrawal-times")
    # Without examples the weight changes nothing.
    alone = Retriever(fixture_kb, Method("dense", model_weight=1.0))
    assert np.allclose(alone.scores(*question), plain.scores(*question))


def test_out_of_fold_never_ranks_a_question_with_a_model_that_learned_it(fixture_kb: KnowledgeBase) -> None:
    questions = [Question(f"e{i}", "en", text, article) for i, (article, text) in enumerate(EXAMPLES)]
    ranked = rank_out_of_fold(fixture_kb, Method("dense", model_weight=1.0), questions, folds=3)
    assert [r.question.id for r in ranked] == [q.id for q in questions]
    # Fold k holds questions k, k+3 (id order): each was ranked by a model of the other four.
    ordered = sorted(questions, key=lambda q: q.id)
    for k in range(3):
        held = ordered[k::3]
        rest = [(q.article, q.text) for q in ordered if q not in held]
        retriever = Retriever(fixture_kb, Method("dense", model_weight=1.0), examples=rest)
        for q in held:
            expected = retriever.search(q.text, q.lang)
            got = next(r for r in ranked if r.question.id == q.id).hits
            assert [h.article for h in got] == [h.article for h in expected]


def _examples_file(path: Path, examples: list[tuple[str | None, str]], prefix: str) -> Path:
    rows = [{"id": f"{prefix}{i}", "lang": "en", "text": t, "article": a} for i, (a, t) in enumerate(examples)]
    lines = [json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_answerer_reads_the_calibrations_examples(tmp_path: Path, fixture_kb: KnowledgeBase) -> None:
    # The withdrawal phrasings are in the second file only: the answerer learns from both.
    _examples_file(tmp_path / "examples.jsonl", EXAMPLES[2:], "x")
    _examples_file(tmp_path / "more.jsonl", EXAMPLES[:2], "y")
    method = {"kind": "dense", "model_weight": 1.0}
    cal = {"method": method, "policy": {"min_score": 0.0, "min_gap": 0.0}, "examples": ["examples.jsonl", "more.jsonl"]}
    (tmp_path / "calibration.json").write_text(json.dumps(cal), encoding="utf-8")
    answerer = kb.answerer(fixture_kb, tmp_path / "calibration.json")
    answer = answerer.answer("coins stuck on the way out, spinning", "zh")
    assert answer.send is not None and answer.send.article.id == "withdrawal-times"
    assert answer.send.variant.lang == "zh"
    # A calibration file written before several files were allowed names one, as a string.
    (tmp_path / "calibration.json").write_text(json.dumps(cal | {"examples": "more.jsonl"}), encoding="utf-8")
    assert kb.Calibration.load(tmp_path / "calibration.json").examples == ("more.jsonl",)
    (tmp_path / "calibration.json").write_text(json.dumps(cal | {"examples": 3}), encoding="utf-8")
    with pytest.raises(kb.KBError, match="examples must be a path or a list of paths"):
        kb.Calibration.load(tmp_path / "calibration.json")
    (tmp_path / "calibration.json").write_text("{}", encoding="utf-8")
    with pytest.raises(kb.KBError, match="not a usable calibration file"):
        kb.answerer(fixture_kb, tmp_path / "calibration.json")


def test_eval_refuses_questions_that_are_partly_examples(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = (FIXTURES / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "examples.jsonl").write_text("\n".join(source[:4]) + "\n", encoding="utf-8")
    cal = {"method": {"kind": "lexical", "model_weight": 0.5}, "policy": {"min_score": 0, "min_gap": 0}}
    cal["examples"] = "examples.jsonl"
    (tmp_path / "cal.json").write_text(json.dumps(cal), encoding="utf-8")
    args = ["kb", "eval", "--kb", str(FIXTURES / "kb"), "--questions", str(FIXTURES / "questions.jsonl")]
    assert main([*args, "--calibration", str(tmp_path / "cal.json")]) == 1
    assert "4 question(s) are also examples: evaluate on held-out questions" in capsys.readouterr().err
