"""The question model: which article a question is about, learned from labelled questions.

A softmax regression over the questions' multilingual-e5 embeddings (the same query embedding the
retriever makes, so asking it costs one matrix product), with one class per article and one for
"no article" (the unanswerable questions). It learns how users actually ask (slang, typos,
"the numbers thing for xrp") where the articles' own words do not reach; the retriever adds its
probabilities to the article scores (``Method.model_weight``). Trained when an index is built
(full-batch gradient descent from zero weights: deterministic, ~1 s for 500 questions); an
article without labelled questions is simply never favoured by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["QuestionModel"]

Matrix = npt.NDArray[np.float32]
#: Embeddings are unit vectors with cosines packed in ~0.7-0.95: scaled up so that the softmax
#: can separate them within the iterations below. These were chosen on the tune set (docs).
SCALE = 10.0
ITERATIONS = 500
STEP = 0.5
L2 = 1e-3


class QuestionModel:
    """P(article | question) for ``classes`` (article ids, then None for "no article")."""

    def __init__(self, classes: Sequence[str | None], weights: Matrix, bias: Matrix) -> None:
        self.classes = tuple(classes)
        self.weights = weights
        self.bias = bias

    @classmethod
    def train(cls, vectors: Matrix, labels: Sequence[str | None], articles: Sequence[str]) -> QuestionModel:
        """Fits on question ``vectors`` (rows) labelled with an article id or None."""
        classes: list[str | None] = [*articles, None]
        index = {c: i for i, c in enumerate(classes)}
        y = np.eye(len(classes), dtype=np.float32)[[index[label] for label in labels]]
        x = vectors.astype(np.float32) * SCALE
        w = np.zeros((x.shape[1], len(classes)), dtype=np.float32)
        b = np.zeros(len(classes), dtype=np.float32)
        for _ in range(ITERATIONS):
            g = (_softmax(x @ w + b) - y) / len(x)
            w -= STEP * (x.T @ g + L2 * w)
            b -= STEP * g.sum(axis=0)
        return cls(classes, w, b)

    def probabilities(self, vector: Matrix) -> Matrix:
        """P(class) for one question's embedding, in ``classes`` order."""
        p: Matrix = _softmax((vector.astype(np.float32) * SCALE) @ self.weights + self.bias)
        return p


def _softmax(z: npt.NDArray[np.floating[Any]]) -> Matrix:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: Matrix = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out
