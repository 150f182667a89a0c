"""Scoring the clustering on the labelled complaints (insight/complaints/*.jsonl).

Each line is ``{"text": ..., "lang": ..., "cause": ...}``. ``dev.jsonl`` is what the threshold was
chosen on; ``test.jsonl`` was written and committed first and is only ever scored. A part is
clustered whole, and the clusters compared with the written causes by purity and the adjusted
Rand index (insight/metrics.py).

    python -m insight.evaluate                 # dev and test at the default threshold
    python -m insight.evaluate --sweep         # dev (and test, for the record) over thresholds
    python -m insight.evaluate --timing 1000   # how long 1,000 complaints take, step by step
    python -m insight.evaluate --subsets 40    # small periods: random subsets of dev
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insight.cluster import DEFAULT_THRESHOLD, Centering, Complaint, Vectors, agglomerate, cluster, embed
from insight.metrics import adjusted_rand_index, purity

SETS = Path(__file__).with_name("complaints")
PARTS = ("dev", "test")


@dataclass(frozen=True, slots=True)
class Labelled:
    complaint: Complaint
    cause: str


@dataclass(frozen=True, slots=True)
class Score:
    part: str
    threshold: float
    items: int
    causes: int
    clusters: int
    singletons: int
    purity: float
    ari: float


def load(part: str) -> list[Labelled]:
    """One part's lines; a malformed line is an error naming the file and line."""
    path = SETS / f"{part}.jsonl"
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            out.append(Labelled(Complaint(f"{part}:{n}", row["text"], row["lang"]), row["cause"]))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{n}: not a complaint line ({exc})") from exc
    return out


def vectors_of(rows: list[Labelled]) -> Vectors:
    """The part's embeddings, centred per language over the part, as the report does a period."""
    langs = [r.complaint.lang for r in rows]
    raw = embed([r.complaint.text for r in rows])
    return Centering.fit(raw, langs).apply(raw, langs)


def score(part: str, rows: list[Labelled], vectors: Vectors, threshold: float) -> Score:
    labels = agglomerate(vectors, threshold).tolist()
    truth = [r.cause for r in rows]
    sizes = np.bincount(labels)
    return Score(
        part,
        threshold,
        len(rows),
        len(set(truth)),
        len(sizes),
        int((sizes == 1).sum()),
        purity(truth, labels),
        adjusted_rand_index(truth, labels),
    )


def timing(n: int) -> str:
    """Time ``n`` complaints (both parts' texts, repeated with a number so none is a duplicate)
    through embedding, centring and agglomeration, and the naming of the clusters."""
    rows = load("dev") + load("test")
    picked = [(k, r.complaint) for k in range(n // len(rows) + 1) for r in rows][:n]
    complaints = [Complaint(str(i), f"{c.text} ({k})" if k else c.text, c.lang) for i, (k, c) in enumerate(picked)]
    langs = [c.lang for c in complaints]
    start = time.perf_counter()
    raw = embed([c.text for c in complaints])
    embedded = time.perf_counter()
    vectors = Centering.fit(raw, langs).apply(raw, langs)
    labels = agglomerate(vectors, DEFAULT_THRESHOLD)
    grouped = time.perf_counter()
    found = cluster(complaints, vectors)
    named = time.perf_counter()
    return (
        f"{n} complaints: embedding {embedded - start:.1f} s, centring and agglomeration "
        f"{grouped - embedded:.2f} s ({labels.max() + 1} clusters), cluster() with terms and quotes "
        f"{named - grouped:.2f} s ({len(found)} clusters)"
    )


def subsets(n: int, threshold: float) -> str:
    """Small periods, as a small deployment's week: ``n`` random subsets of the dev set (seed 0)
    of 2 to 4 causes and 10 to 30 complaints, each centred and clustered alone."""
    rows = load("dev")
    raw = embed([r.complaint.text for r in rows])
    rng = np.random.default_rng(0)
    causes = sorted({r.cause for r in rows})
    scores = []
    for _ in range(n):
        picked = set(rng.choice(causes, size=int(rng.integers(2, 5)), replace=False))
        pool = [i for i, r in enumerate(rows) if r.cause in picked]
        idx = sorted(rng.choice(pool, size=min(len(pool), int(rng.integers(10, 31))), replace=False))
        some = [rows[i] for i in idx]
        langs = [r.complaint.lang for r in some]
        vectors = Centering.fit(raw[idx], langs).apply(raw[idx], langs)
        scores.append(score("dev", some, vectors, threshold))
    return (
        f"{n} dev subsets at {threshold}: mean clusters {np.mean([s.clusters for s in scores]):.1f} "
        f"for {np.mean([s.causes for s in scores]):.1f} causes, purity {np.mean([s.purity for s in scores]):.3f}, "
        f"ARI {np.mean([s.ari for s in scores]):.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insight.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--sweep", action="store_true", help="thresholds 0.80 to 1.10 by 0.02")
    parser.add_argument("--show", choices=PARTS, help="print the clusters of this part")
    parser.add_argument("--timing", type=int, metavar="N", help="time N complaints instead of scoring")
    parser.add_argument("--subsets", type=int, metavar="N", help="score N small random subsets of dev instead")
    args = parser.parse_args(argv)
    if args.subsets:
        print(subsets(args.subsets, args.threshold))
        return 0
    if args.timing:
        print(timing(args.timing))
        return 0
    thresholds = [round(0.80 + 0.02 * k, 2) for k in range(16)] if args.sweep else [args.threshold]
    print("part  threshold  items  causes  clusters  singletons  purity  ari")
    for part in PARTS:
        rows = load(part)
        start = time.perf_counter()
        vectors = vectors_of(rows)
        took = time.perf_counter() - start
        for t in thresholds:
            s = score(part, rows, vectors, t)
            print(
                f"{s.part:<5} {s.threshold:<10.2f} {s.items:<6} {s.causes:<7} {s.clusters:<9} "
                f"{s.singletons:<11} {s.purity:.3f}   {s.ari:.3f}"
            )
        print(f"# {part}: embedding and centring {len(rows)} texts took {took:.1f} s")
        if args.show == part:
            for c in cluster([r.complaint for r in rows], vectors, args.threshold):
                causes = ", ".join(f"{k}:{v}" for k, v in sorted(_count(rows, c.members).items(), key=lambda x: -x[1]))
                print(f"\n[{c.size}] {c.name}  ({causes})")
                for i in c.quotes:
                    print(f"    {rows[i].complaint.text}")
    return 0


def _count(rows: list[Labelled], members: tuple[int, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in members:
        out[rows[i].cause] = out.get(rows[i].cause, 0) + 1
    return out


if __name__ == "__main__":
    raise SystemExit(main())
