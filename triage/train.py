"""Train the triage models on the training corpus: ``python -m triage.train`` (``make model``).

Runs in the training environment (``make model`` builds ``.venv-train`` from
``requirements-train.lock``): the fastText *trainer* (fasttext-wheel) and the runtime's predictor
(fasttext-predict, through the language detector) install the same ``fasttext`` module, so they
cannot share one environment. The models it writes are read at run time by fasttext-predict.

What it does, deterministically for a seed (one thread, fixed seed, files in a fixed order):

1. Reads ``triage/corpus/train/*.jsonl`` (never ``dev/``: that set is for measuring only).
2. ``--select``: picks the hyper-parameters of each model (group, priority) by 5-fold
   cross-validation on the training corpus, and the temperature that calibrates its confidences on
   the out-of-fold predictions (lowest log loss).
3. Trains each model on the whole training corpus, quantises it (``.ftz``), and writes it with
   ``triage.json``: labels, parameters, temperatures, the corpus digest and the cross-validation
   figures.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fasttext  # fasttext-wheel: the trainer (see the module docstring)

from rules.intent import calibrated, tokens

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
MODELS = ROOT.parent / "rules" / "models"
FORMAT = 1  # triage.json's format; the loader refuses others

# The grid --select searches (each point: one 5-fold cross-validation per model).
GRID: dict[str, Sequence[Any]] = {
    "dim": (50, 100),
    "epoch": (25, 50),
    "lr": (0.5,),
    "wordNgrams": (1, 2),
    "minn": (2,),
    "maxn": (4, 5),
}
# Chosen by 5-fold cross-validation on the training corpus (docs/triage.md): --select's grid on the
# first 3,829 messages gave 50 epochs and the word bigrams; on all 6,508, character n-grams of 3-4
# and dim 25 then beat the grid's best (group 80.5 vs 80.3%, priority 75.2 vs 74.4%) at half the
# prediction time (57 vs 106 µs a message for both models).
DEFAULTS: dict[str, dict[str, Any]] = {
    "group": {"dim": 25, "epoch": 50, "lr": 0.5, "wordNgrams": 1, "minn": 3, "maxn": 4},
    "priority": {"dim": 25, "epoch": 50, "lr": 0.5, "wordNgrams": 2, "minn": 3, "maxn": 4},
}
# Hash buckets of word bigrams and character n-grams: fastText's 2,000,000 make a 52 MB model of a
# corpus this size; 100,000 keep it a few MB to ship (collisions cost nothing measurable here).
BUCKET = 100_000
TEMPERATURES = [round(0.5 + 0.1 * i, 1) for i in range(26)]  # 0.5 … 3.0


def read(paths: Sequence[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def groups_of(row: dict[str, Any]) -> list[str]:
    g = row["expect"]["group"]
    return list(g) if isinstance(g, list) else [g]


def priority_of(row: dict[str, Any]) -> list[str]:
    return [row["expect"]["priority"]]


Labeller = Callable[[dict[str, Any]], list[str]]
TASKS: dict[str, Labeller] = {"group": groups_of, "priority": priority_of}


def _line(row: dict[str, Any], labels: list[str]) -> str:
    return " ".join(f"__label__{x}" for x in labels) + " " + tokens(row["text"], row.get("subject"))


def fit(rows: Sequence[dict[str, Any]], label: Labeller, params: dict[str, Any], seed: int) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as f:
        f.write("\n".join(_line(r, label(r)) for r in rows) + "\n")
        f.flush()
        return fasttext.train_supervised(
            f.name, thread=1, seed=seed, verbose=0, loss="softmax", **{"bucket": BUCKET, **params}
        )


def probabilities(model: Any, row: dict[str, Any]) -> dict[str, float]:
    # model.f.predict: the bound C++ call (FastText.predict trips over NumPy 2's copy rules).
    # The line's end ("\n") is a word to fastText: training files have it, and so does prediction.
    pairs = model.f.predict(tokens(row["text"], row.get("subject")) + "\n", -1, 0.0, "strict")
    return {label.removeprefix("__label__"): float(p) for p, label in pairs}


def folds(rows: Sequence[dict[str, Any]], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    parts = [order[i::k] for i in range(k)]
    return [([j for p in parts[:i] + parts[i + 1 :] for j in p], part) for i, part in enumerate(parts)]


def out_of_fold(
    rows: Sequence[dict[str, Any]], label: Labeller, params: dict[str, Any], seed: int, k: int = 5
) -> list[dict[str, float]]:
    """Each training row's probabilities from a model that did not see it."""
    out: list[dict[str, float]] = [{} for _ in rows]
    for train_idx, test_idx in folds(rows, k, seed):
        model = fit([rows[i] for i in train_idx], label, params, seed)
        for i in test_idx:
            out[i] = probabilities(model, rows[i])
    return out


def accuracy(rows: Sequence[dict[str, Any]], label: Labeller, probs: Sequence[dict[str, float]]) -> float:
    hits = sum(max(p, key=p.__getitem__) in label(r) for r, p in zip(rows, probs, strict=True) if p)
    return hits / len(rows)


def log_loss(rows: Sequence[dict[str, Any]], label: Labeller, probs: Sequence[dict[str, float]], t: float) -> float:
    total = 0.0
    for r, p in zip(rows, probs, strict=True):
        c = calibrated(p, t)
        total -= math.log(max(sum(c.get(x, 0.0) for x in label(r)), 1e-9))
    return total / len(rows)


def select(rows: Sequence[dict[str, Any]], label: Labeller, seed: int) -> dict[str, Any]:
    """The grid point with the best out-of-fold accuracy."""
    best: tuple[float, dict[str, Any]] | None = None
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values, strict=True))
        started = time.monotonic()
        acc = accuracy(rows, label, out_of_fold(rows, label, params, seed))
        print(f"  {params}: cv accuracy {acc:.4f} ({time.monotonic() - started:.0f}s)", file=sys.stderr, flush=True)
        if best is None or acc > best[0]:
            best = (acc, params)
    assert best is not None
    return best[1]


def fit_temperature(rows: Sequence[dict[str, Any]], label: Labeller, probs: Sequence[dict[str, float]]) -> float:
    """The temperature with the lowest log loss on out-of-fold probabilities."""
    return min(TEMPERATURES, key=lambda t: log_loss(rows, label, probs, t))


def digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=MODELS, help="where to write the models (rules/models)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--select", action="store_true", help="choose parameters by 5-fold cross-validation (slow)")
    ap.add_argument("--corpus", type=Path, action="append", help="training files (default: triage/corpus/train)")
    ap.add_argument("--params", type=json.loads, help="parameters for both models instead of the default, as JSON")
    ap.add_argument("--oof", type=Path, help="write each training message's out-of-fold probabilities here (JSONL)")
    args = ap.parse_args(argv)
    paths = sorted(args.corpus or (CORPUS / "train").glob("*.jsonl"))
    rows = read(paths)
    meta: dict[str, Any] = {"format": FORMAT, "corpus": digest(paths), "messages": len(rows), "seed": args.seed}
    args.out.mkdir(parents=True, exist_ok=True)
    oof: dict[str, list[dict[str, float]]] = {}
    for task, label in TASKS.items():
        given = (args.params or {}).get(task, {})
        params = {**(select(rows, label, args.seed) if args.select else DEFAULTS[task]), **given}
        probs = out_of_fold(rows, label, params, args.seed)
        cv = accuracy(rows, label, probs)
        temperature = fit_temperature(rows, label, probs)
        oof[task] = [calibrated(p, temperature) for p in probs]
        model = fit(rows, label, params, args.seed)
        model.quantize(input=None, qnorm=True, retrain=False, cutoff=0)
        model.save_model(str(args.out / f"{task}.ftz"))
        labels = sorted(x.removeprefix("__label__") for x in model.get_labels())
        meta[task] = {"labels": labels, "params": params, "temperature": temperature, "cv_accuracy": round(cv, 4)}
        print(f"{task}: {params} cv accuracy {cv:.4f}, temperature {temperature}", file=sys.stderr)
    (args.out / "triage.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if args.oof:
        with args.oof.open("w", encoding="utf-8") as out:
            for i, row in enumerate(rows):
                out.write(json.dumps({"id": row["id"], **{t: oof[t][i] for t in oof}}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
