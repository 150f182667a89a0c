"""``switchboard bench kb``: answers per second, latency and top-1 accuracy of the knowledge-base
answerer, and what building its index costs, on the default knowledge base or one grown to
``--articles`` (kb/synthetic.py: seeded generated articles beside the real ones).

One thread, one question at a time, as a caller would ask: the whole ``Answerer.answer`` (the
question's embedding, BM25, the question model, the per-article scores and the decision). The questions are a labelled
set (default: the tune set of the checkout, ``kb/questions/tune.jsonl``); top-1 accuracy is over
its answerable questions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import kb
from kb.synthetic import grow

#: The tune set beside the package in a source checkout.
TUNE = Path(__file__).resolve().parents[1] / "kb" / "questions" / "tune.jsonl"


def measure(
    base: kb.KnowledgeBase,
    questions: list[kb.Question],
    calibration: kb.Calibration,
    examples: list[kb.Question],
    embedder: kb.Embedder | None = None,
) -> dict[str, Any]:
    """The figures of one run (``run`` prints them). Questions that are also the question model's
    examples (the tune set) are asked out of fold (kb.evaluate.folds_of): 5 answerers, each with a
    model of the examples outside its fold; ``build_index_s`` is the first, cold one (every
    variant and example embedded), the others reuse its vectors."""
    from kb.evaluate import examples_of, folds_of

    splits = folds_of(questions, examples)
    cache: dict[str, Any] = {}
    latencies, correct, answerable, sent, build_s = [], 0, 0, 0, 0.0
    for held, learned in splits:
        started = time.perf_counter()
        retriever = kb.Retriever(base, calibration.method, embedder, cache, examples_of(learned))
        build_s = build_s or time.perf_counter() - started
        cache |= retriever.new_vectors
        answerer = kb.Answerer(retriever, calibration.policy)
        answerer.answer("warm-up", "en")  # loads the embedder's weights when no variant needed them
        for q in held:
            t = time.perf_counter()
            answer = answerer.answer(q.text, q.lang)
            latencies.append(time.perf_counter() - t)
            if q.article is not None:
                answerable += 1
                correct += answer.suggestions[0].article.id == q.article
                sent += answer.send is not None
    total = sum(latencies)
    ms = np.asarray(latencies) * 1000
    return {
        "articles": len(base),
        "variants": sum(len(a.variants) for a in base.articles),
        "method": calibration.method.name,
        "questions": len(questions),
        "asked": f"out of fold ({len(splits)} folds)" if len(splits) > 1 else "held out",
        "build_index_s": round(build_s, 2),
        "answers_per_s": round(len(questions) / total, 1) if total else None,
        "latency_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "latency_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "top1_accuracy": round(correct / answerable, 4) if answerable else None,
        "auto_answer_rate": round(sent / answerable, 4) if answerable else None,
    }


def run(
    base: kb.KnowledgeBase,
    questions: list[kb.Question],
    articles: int | None,
    calibration: Path,
    as_json: bool,
    out: TextIO,
    seed: int = 1,
) -> int:
    cal = kb.Calibration.load(calibration)
    examples = kb.load_question_files(cal.examples_paths(calibration), base) if cal.method.model_weight else []
    if articles is not None:
        base = grow(base, articles, seed)
    result = measure(base, questions, cal, examples)
    if articles is not None:
        result["generated"] = f"kb/synthetic.py, seed {seed}"
    if as_json:
        print(json.dumps(result), file=out)
        return 0
    for key, value in result.items():
        print(f"{key:<18} {value}", file=out)
    return 0
