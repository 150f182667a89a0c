"""The evaluation table: per language and overall, on a labelled question set.

Definitions (docs/knowledge-base.md):

* top-1 accuracy: answerable questions whose best-ranked article is their label;
* auto-answer rate: answerable questions that got an answer sent by itself;
* wrong among auto-sent: of the answers sent to answerable questions, those with another article
  than the label;
* unanswerable auto-answered: unanswerable questions that got an answer sent by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kb.answer import Policy, Reason, decide
from kb.article import LANGS, KnowledgeBase
from kb.questions import Question
from kb.retrieval import Embedder, Hit, Method, Retriever, Vector

__all__ = ["Ranked", "Row", "folds_of", "format_table", "rank", "rank_out_of_fold", "table"]


@dataclass(frozen=True, slots=True)
class Ranked:
    """A question and its best-ranked articles (the top three, best first)."""

    question: Question
    hits: tuple[Hit, ...]

    @property
    def top(self) -> str:
        return self.hits[0].article

    @property
    def score(self) -> float:
        return self.hits[0].score

    @property
    def gap(self) -> float:
        return self.hits[0].score - self.hits[1].score if len(self.hits) > 1 else self.hits[0].score


def rank(retriever: Retriever, questions: Iterable[Question]) -> list[Ranked]:
    return [Ranked(q, tuple(retriever.search(q.text, q.lang, k=3))) for q in questions]


def examples_of(questions: Iterable[Question]) -> list[tuple[str | None, str]]:
    """Labelled questions as (article or None, text): what a retriever's question model learns."""
    return [(q.article, q.text) for q in questions]


def folds_of(
    questions: Sequence[Question], examples: Sequence[Question], folds: int = 5
) -> list[tuple[list[Question], list[Question]]]:
    """(asked, learned) pairs such that no question is asked of a model that learned it. When
    some questions are examples too, the questions in id order are dealt round-robin into
    ``folds``, and each fold is asked of a model of every example not in it (the other folds, and
    examples that are not questions); otherwise all are asked of a model of all the examples."""
    asked = {q.id for q in questions}
    if not asked & {e.id for e in examples}:
        return [(list(questions), list(examples))]
    ordered = sorted(questions, key=lambda q: q.id)
    pairs = []
    for k in range(folds):
        held = ordered[k::folds]
        out = {q.id for q in held}
        pairs.append((held, [e for e in examples if e.id not in out]))
    return pairs


def rank_out_of_fold(
    kb: KnowledgeBase,
    method: Method,
    questions: Sequence[Question],
    folds: int = 5,
    embedder: Embedder | None = None,
    vectors: dict[str, Vector] | None = None,
    examples: Sequence[Question] | None = None,
) -> list[Ranked]:
    """Every question ranked by a retriever whose examples (default: the questions themselves)
    leave out the question's fold (``folds_of``): how the examples help questions they do not
    contain. ``vectors`` is used and filled as a cache across the folds."""
    cache = {} if vectors is None else vectors
    ranked: dict[str, Ranked] = {}
    for held, learned in folds_of(questions, questions if examples is None else examples, folds):
        retriever = Retriever(kb, method, embedder, cache, examples_of(learned))
        cache |= retriever.new_vectors
        ranked |= {r.question.id: r for r in rank(retriever, held)}
    return [ranked[q.id] for q in questions]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: counts, and the rates read from them."""

    lang: str
    answerable: int
    top1: int
    sent: int
    sent_wrong: int
    unanswerable: int
    unanswerable_sent: int

    @property
    def top1_accuracy(self) -> float | None:
        return self.top1 / self.answerable if self.answerable else None

    @property
    def auto_rate(self) -> float | None:
        return self.sent / self.answerable if self.answerable else None

    @property
    def wrong_rate(self) -> float | None:
        return self.sent_wrong / self.sent if self.sent else None

    @property
    def unanswerable_rate(self) -> float | None:
        return self.unanswerable_sent / self.unanswerable if self.unanswerable else None

    def to_dict(self) -> dict[str, Any]:
        counts = {k: getattr(self, k) for k in self.__slots__}
        rates = ("top1_accuracy", "auto_rate", "wrong_rate", "unanswerable_rate")
        return counts | {k: getattr(self, k) for k in rates}


def table(ranked: Sequence[Ranked], kb: KnowledgeBase, policy: Policy) -> list[Row]:
    """A row per language present (``LANGS`` order), then ``all``."""
    counts: dict[str, list[int]] = {}
    for r in ranked:
        c = counts.setdefault(r.question.lang, [0] * 6)
        sent = decide(list(r.hits), kb, policy, r.question.lang).reason is Reason.SENT
        if r.question.article is None:
            c[4] += 1
            c[5] += sent
        else:
            c[0] += 1
            c[1] += r.top == r.question.article
            c[2] += sent
            c[3] += sent and r.top != r.question.article
    rows = [Row(lang, *counts[lang]) for lang in LANGS if lang in counts]
    total = [sum(c[i] for c in counts.values()) for i in range(6)]
    return [*rows, Row("all", *total)]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_table(rows: Sequence[Row]) -> str:
    """The table as aligned text (Markdown)."""
    head = (
        "| lang | answerable | top-1 accuracy | auto-sent | auto-answer rate | wrong among auto-sent "
        "| unanswerable | unanswerable auto-answered |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.lang} | {r.answerable} | {_pct(r.top1_accuracy)} ({r.top1}) | {r.sent} | {_pct(r.auto_rate)} "
            f"| {_pct(r.wrong_rate)} ({r.sent_wrong}) | {r.unanswerable} "
            f"| {_pct(r.unanswerable_rate)} ({r.unanswerable_sent}) |"
        )
    return "\n".join(lines)
