"""Choosing the auto-answer thresholds on a labelled question set.

Every pair (min_score, min_gap) drawn from the scores and gaps the questions produced is tried;
of the pairs that keep both error rates within their targets, the one sending the most correct
answers wins, and among equals the strictest (highest score, then highest gap), which leaves the
most room for questions unlike the tuning set's. Questions whose best article is ``auto: false``
are never sent and count as not answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.answer import Policy
from kb.article import KnowledgeBase
from kb.evaluate import Ranked

__all__ = ["Targets", "calibrate"]


@dataclass(frozen=True, slots=True)
class Targets:
    """The most the calibration allows: wrong answers among those sent to answerable questions,
    and unanswerable questions answered (of all unanswerable ones)."""

    max_wrong: float = 0.02
    max_unanswerable: float = 0.02


def calibrate(ranked: Sequence[Ranked], kb: KnowledgeBase, targets: Targets) -> Policy:
    """The thresholds that send the most correct answers within ``targets``. With none that send
    anything, a policy that sends nothing (thresholds above every score)."""
    if not ranked:
        raise ValueError("no questions to calibrate on")
    score = np.asarray([r.score for r in ranked], dtype=np.float64)
    gap = np.asarray([r.gap for r in ranked], dtype=np.float64)
    sendable = np.asarray([kb.get(r.top).auto for r in ranked])
    answerable = np.asarray([r.question.article is not None for r in ranked])
    correct = np.asarray([r.top == r.question.article for r in ranked])
    n_unanswerable = int((~answerable).sum())
    gaps = np.unique(gap)
    best: tuple[int, float, float] | None = None
    for t in np.unique(score[sendable]) if sendable.any() else []:
        base = sendable & (score >= t)
        # sent[i, j]: question i is sent at this score threshold and gap threshold gaps[j].
        sent = base[:, None] & (gap[:, None] >= gaps[None, :])
        sent_answerable = (sent & answerable[:, None]).sum(axis=0)
        right = (sent & correct[:, None]).sum(axis=0)
        wrong = sent_answerable - right
        unanswered = (sent & ~answerable[:, None]).sum(axis=0)
        ok = wrong <= targets.max_wrong * np.maximum(sent_answerable, 1)
        ok &= unanswered <= targets.max_unanswerable * max(n_unanswerable, 1)
        if not ok.any():
            continue
        # The most correct answers; among equals the highest gap threshold.
        j = int(np.flatnonzero(ok)[np.lexsort((gaps[ok], right[ok]))[-1]])
        candidate = (int(right[j]), float(t), float(gaps[j]))
        if best is None or candidate[0] >= best[0]:  # ascending t: a tie takes the higher score
            best = candidate
    if best is None:
        return Policy(min_score=float(score.max()) + 1.0, min_gap=float(gap.max()) + 1.0)
    return Policy(min_score=best[1], min_gap=best[2])
