"""Train the triage model on the training corpus: ``python -m triage.train`` (``make model``).

Runs in the training environment (``make model`` builds ``.venv-train`` from
``requirements-train.lock``): the fastText *trainer* (fasttext-wheel) and the runtime's predictor
(fasttext-predict, through the language detector) install the same ``fasttext`` module, so they
cannot share one environment. The model it writes is read at run time by fasttext-predict.

One label set for both tasks: fastText classifiers (one per view, ``VIEWS``) over every (group,
priority) pair seen in the corpus ("payments|P2"); a message with two acceptable groups is labelled
with both pairs. The runtime averages the views' probabilities of the pairs and sums them into a
group's and a priority's (``IntentModel.marginals``).

What it does, deterministically for a seed (one thread, fixed seed, files in a fixed order):

1. Reads ``triage/corpus/train/*.jsonl`` (never ``dev/``: that set is for measuring only).
2. ``--select``: picks the hyper-parameters by 5-fold cross-validation on the training corpus
   (the sum of the group and priority accuracies), and for each task the temperature that
   calibrates its confidences on the out-of-fold predictions (lowest log loss).
   Each model learns from its training messages and, for Vietnamese and Russian ones, the same
   messages in the other script users write them in (``augmented``); the held-out fold is scored
   as written.
3. Trains the model's views (``VIEWS``) on the whole training corpus (augmented alike), quantises
   them (``triage.ftz``, ``words.ftz``), and writes them with ``triage.json``: labels, parameters,
   views, temperatures, the corpus digest and the cross-validation figures.
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
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fasttext  # fasttext-wheel: the trainer (see the module docstring)

from rules.intent import FORMAT, IntentModel, Prediction, calibrated, joint_label, split_label, tokens

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
MODELS = ROOT.parent / "rules" / "models"

# The grid --select searches (each point: one 5-fold cross-validation).
GRID: dict[str, Sequence[Any]] = {
    "dim": (25, 50),
    "epoch": (25, 50),
    "lr": (0.5,),
    "wordNgrams": (1, 2),
    "minn": (2, 3),
    "maxn": (4, 5),
}
# Chosen by 5-fold cross-validation on the training corpus (docs/triage.md). For the two models of
# format 1: --select's grid on the first 3,829 messages gave 50 epochs and the word bigrams; on all
# 6,508, character n-grams of 3-4 and dim 25 beat the grid's best at half the prediction time. The
# one model on 8,603 messages: word bigrams 84.8 / 82.5% (group / priority) vs 84.7 / 81.8% without;
# dim 50 84.7 / 82.4%.
DEFAULTS: dict[str, Any] = {"dim": 25, "epoch": 50, "lr": 0.5, "wordNgrams": 2, "minn": 3, "maxn": 4}
# Hash buckets of word bigrams and character n-grams: fastText's 2,000,000 make a 52 MB model of a
# corpus this size; 100,000 keep it a few MB to ship (collisions cost nothing measurable here).
BUCKET = 100_000
# The model's views (rules/intent.py ``IntentModel``): file -> its parameters over the shared ones.
# One reads character n-grams, one only words and word bigrams; their average is the prediction.
# Chosen by 5-fold cross-validation on the training corpus (docs/triage.md, "Views"): group 86.7 ->
# 87.5%, priority 84.2 -> 85.2% against the first view alone; a second seed of the same view instead
# changed nothing (86.6 / 84.2%).
VIEWS: dict[str, dict[str, Any]] = {"triage.ftz": {}, "words.ftz": {"minn": 0, "maxn": 0}}
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


def joint_labels(row: dict[str, Any]) -> list[str]:
    return [joint_label(g, row["expect"]["priority"]) for g in groups_of(row)]


def _line(row: dict[str, Any]) -> str:
    return " ".join(f"__label__{x}" for x in joint_labels(row)) + " " + tokens(row["text"], row.get("subject"))


_TRANSLIT = str.maketrans(
    {
        **dict(zip("абвгдезийклмнопрстуфхцыэ", "abvgdeziyklmnoprstufhcye", strict=True)),
        **{"ё": "e", "ж": "zh", "ч": "ch", "ш": "sh", "щ": "sch", "ю": "yu", "я": "ya", "ь": "", "ъ": ""},
    }
)


def unaccented(text: str) -> str:
    """Vietnamese as many users type it: without its diacritics (đ as d)."""
    bare = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", bare.replace("đ", "d").replace("Đ", "D"))


def latinised(text: str) -> str:
    """Russian as many users type it on a Latin keyboard ("vivod ne prishel"): one common scheme
    of transliteration, lower case (the model reads lower case only)."""
    return text.lower().translate(_TRANSLIT)


#: The other script each language's messages are also learnt in (``augmented``).
_OTHER_SCRIPT: dict[str, Callable[[str], str]] = {"vi": unaccented, "ru": latinised}
#: What ``augmented`` adds, as triage.json records it.
AUGMENT = ["vi: without diacritics", "ru: in Latin letters"]


def augmented(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, and each Vietnamese one with diacritics again without them, and each Russian one
    in Cyrillic again in Latin letters, with the same labels (docs/triage.md, "Augmentation"):
    users write the same words in both scripts, and the corpus has few of the second (out of fold,
    group errors 17.4% on Vietnamese without diacritics against 14.4%; Russian in Latin letters
    19.4% against 11.3%)."""
    extra: list[dict[str, Any]] = []
    for row in rows:
        convert = _OTHER_SCRIPT.get(row["lang"])
        if convert is None:
            continue
        text = convert(row["text"])
        if text != row["text"] and (row["lang"] != "ru" or text != row["text"].lower()):
            subject = row.get("subject")
            extra.append({**row, "text": text, **({"subject": convert(subject)} if subject else {})})
    return [*rows, *extra]


def fit(
    rows: Sequence[dict[str, Any]], params: dict[str, Any], seed: int, views: dict[str, dict[str, Any]] | None = None
) -> list[Any]:
    """A fastText model per view (``VIEWS`` by default), trained on ``rows`` and their other
    scripts (``augmented``); only what it learns from is augmented, so cross-validation scores the
    messages as they were written."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as f:
        f.write("\n".join(_line(r) for r in augmented(rows)) + "\n")
        f.flush()
        return [
            fasttext.train_supervised(
                f.name, thread=1, seed=seed, verbose=0, loss="softmax", **{"bucket": BUCKET, **params, **own}
            )
            for own in (VIEWS if views is None else views).values()
        ]


def wrap(models: Sequence[Any], temperatures: tuple[float, float] = (1.0, 1.0)) -> IntentModel:
    """Freshly trained views as the runtime asks them (their labels from the first one: every view
    learns from the same lines, so they have the same)."""
    labels = sorted(str(x).removeprefix("__label__") for x in models[0].get_labels())
    pairs = [split_label(x) for x in labels]
    meta = {
        "labels": labels,
        "group": {"labels": sorted({g for g, _ in pairs}), "temperature": temperatures[0]},
        "priority": {"labels": sorted({p for _, p in pairs}), "temperature": temperatures[1]},
    }
    return IntentModel(meta, models)


def marginals(model: IntentModel, row: dict[str, Any]) -> Prediction:
    """The uncalibrated group and priority probabilities of a row."""
    return Prediction(*model.marginals(row["text"], row.get("subject")))


def folds(rows: Sequence[dict[str, Any]], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    parts = [order[i::k] for i in range(k)]
    return [([j for p in parts[:i] + parts[i + 1 :] for j in p], part) for i, part in enumerate(parts)]


def out_of_fold(rows: Sequence[dict[str, Any]], params: dict[str, Any], seed: int, k: int = 5) -> list[Prediction]:
    """Each training row's uncalibrated probabilities from a model that did not see it."""
    out: list[Prediction | None] = [None] * len(rows)
    for train_idx, test_idx in folds(rows, k, seed):
        model = wrap(fit([rows[i] for i in train_idx], params, seed))
        for i in test_idx:
            out[i] = marginals(model, rows[i])
    return [p for p in out if p is not None]


def probs_of(task: str, predictions: Sequence[Prediction]) -> list[dict[str, float]]:
    return [getattr(p, task) for p in predictions]


def accuracy(rows: Sequence[dict[str, Any]], label: Labeller, probs: Sequence[dict[str, float]]) -> float:
    hits = sum(max(p, key=p.__getitem__) in label(r) for r, p in zip(rows, probs, strict=True) if p)
    return hits / len(rows)


def log_loss(rows: Sequence[dict[str, Any]], label: Labeller, probs: Sequence[dict[str, float]], t: float) -> float:
    total = 0.0
    for r, p in zip(rows, probs, strict=True):
        c = calibrated(p, t)
        total -= math.log(max(sum(c.get(x, 0.0) for x in label(r)), 1e-9))
    return total / len(rows)


def cv_accuracy(rows: Sequence[dict[str, Any]], predictions: Sequence[Prediction]) -> dict[str, float]:
    return {task: accuracy(rows, label, probs_of(task, predictions)) for task, label in TASKS.items()}


def select(rows: Sequence[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The grid point with the best out-of-fold accuracy (group and priority summed)."""
    best: tuple[float, dict[str, Any]] | None = None
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values, strict=True))
        started = time.monotonic()
        acc = cv_accuracy(rows, out_of_fold(rows, params, seed))
        took = time.monotonic() - started
        print(f"  {params}: cv accuracy {acc} ({took:.0f}s)", file=sys.stderr, flush=True)
        if best is None or sum(acc.values()) > best[0]:
            best = (sum(acc.values()), params)
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
    ap.add_argument("--out", type=Path, default=MODELS, help="where to write the model (rules/models)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--select", action="store_true", help="choose parameters by 5-fold cross-validation (slow)")
    ap.add_argument("--corpus", type=Path, action="append", help="training files (default: triage/corpus/train)")
    ap.add_argument("--params", type=json.loads, help="fastText parameters over the default, as JSON")
    ap.add_argument("--oof", type=Path, help="write each training message's out-of-fold probabilities here (JSONL)")
    args = ap.parse_args(argv)
    paths = sorted(args.corpus or (CORPUS / "train").glob("*.jsonl"))
    rows = read(paths)
    params = {**(select(rows, args.seed) if args.select else DEFAULTS), **(args.params or {})}
    oof = out_of_fold(rows, params, args.seed)
    cv = cv_accuracy(rows, oof)
    temperatures = {task: fit_temperature(rows, label, probs_of(task, oof)) for task, label in TASKS.items()}
    models = fit(rows, params, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, model in zip(VIEWS, models, strict=True):
        model.quantize(input=None, qnorm=True, retrain=False, cutoff=0)
        model.save_model(str(args.out / name))
    wrapped = wrap(models)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "corpus": digest(paths),
        "messages": len(rows),
        "seed": args.seed,
        "params": params,
        "views": VIEWS,
        "augment": AUGMENT,
        "labels": wrapped.meta["labels"],
    }
    for task in TASKS:
        labels = wrapped.meta[task]["labels"]
        meta[task] = {"labels": labels, "temperature": temperatures[task], "cv_accuracy": round(cv[task], 4)}
        print(f"{task}: cv accuracy {cv[task]:.4f}, temperature {temperatures[task]}", file=sys.stderr)
    (args.out / "triage.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for stale in ("group.ftz", "priority.ftz"):  # format 1's files, where the output replaces one
        (args.out / stale).unlink(missing_ok=True)
    if args.oof:
        with args.oof.open("w", encoding="utf-8") as out:
            for row, p in zip(rows, oof, strict=True):
                calibrated_p = {t: calibrated(getattr(p, t), temperatures[t]) for t in TASKS}
                out.write(json.dumps({"id": row["id"], **calibrated_p}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
