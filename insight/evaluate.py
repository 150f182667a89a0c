"""Scoring the clustering on the labelled complaints (insight/complaints/*.jsonl).

Each line is ``{"text": ..., "lang": ..., "cause": ...}``. ``dev.jsonl`` is what the threshold was
chosen on; ``test.jsonl`` was written and committed first and is only ever scored. A part is
clustered whole, and the clusters compared with the written causes by purity and the adjusted
Rand index (insight/metrics.py).

    python -m insight.evaluate                 # dev and test at the default threshold
    python -m insight.evaluate --sweep         # dev (and test, for the record) over thresholds
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insight.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--sweep", action="store_true", help="thresholds 0.80 to 1.10 by 0.02")
    parser.add_argument("--show", choices=PARTS, help="print the clusters of this part")
    args = parser.parse_args(argv)
    thresholds = [round(0.80 + 0.02 * k, 2) for k in range(16)] if args.sweep else [args.threshold]
    print("part  threshold  items  causes  clusters  singletons  purity  ari")
    for part in PARTS:
        rows = load(part)
        start = time.perf_counter()
        raw = embed([r.complaint.text for r in rows])
        took = time.perf_counter() - start
        langs = [r.complaint.lang for r in rows]
        vectors = Centering.fit(raw, langs).apply(raw, langs)
        for t in thresholds:
            s = score(part, rows, vectors, t)
            print(
                f"{s.part:<5} {s.threshold:<10.2f} {s.items:<6} {s.causes:<7} {s.clusters:<9} "
                f"{s.singletons:<11} {s.purity:.3f}   {s.ari:.3f}"
            )
        print(f"# {part}: embedding {len(rows)} texts took {took:.1f} s")
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
