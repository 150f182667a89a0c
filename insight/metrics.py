"""How well a clustering recovers known causes: purity and the adjusted Rand index, in numpy.

Both compare two labellings of the same items (the causes written in the labelled set, the
clusters found). Purity is the share of items whose cluster's most common cause is theirs: it
rewards splitting (one item a cluster scores 1.0), so it is read beside the number of clusters.
The adjusted Rand index (Hubert & Arabie, 1985) counts the pairs of items both labellings put
together, corrected for what chance would give: 1.0 for the same partition, about 0 for a random
one; splitting and merging both cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["adjusted_rand_index", "contingency", "purity"]

L = TypeVar("L")


def _codes(labels: Sequence[L]) -> tuple[npt.NDArray[np.int64], int]:
    index: dict[L, int] = {}
    codes = np.array([index.setdefault(x, len(index)) for x in labels], dtype=np.int64)
    return codes, len(index)


def contingency(truth: Sequence[object], found: Sequence[object]) -> npt.NDArray[np.int64]:
    """Counts of items per (true label, found label): rows in order of first appearance."""
    if len(truth) != len(found):
        raise ValueError(f"the labellings differ in length: {len(truth)} and {len(found)}")
    t, nt = _codes(truth)
    f, nf = _codes(found)
    table = np.zeros((nt, nf), dtype=np.int64)
    np.add.at(table, (t, f), 1)
    return table


def purity(truth: Sequence[object], found: Sequence[object]) -> float:
    """Share of items whose found cluster's most common true label is their own."""
    if not truth:
        raise ValueError("purity of no items")
    return float(contingency(truth, found).max(axis=0).sum() / len(truth))


def _pairs(x: npt.NDArray[np.int64]) -> float:
    return float((x * (x - 1) // 2).sum())


def adjusted_rand_index(truth: Sequence[object], found: Sequence[object]) -> float:
    """The Rand index adjusted for chance: (index - expected) / (max - expected) over pairs."""
    table = contingency(truth, found)
    n = int(table.sum())
    if n < 2:
        raise ValueError("the adjusted Rand index needs at least two items")
    index = _pairs(table)
    rows, cols = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0))
    expected = rows * cols / (n * (n - 1) / 2)
    best = (rows + cols) / 2
    if best == expected:  # both labellings are one cluster each, or all singletons: identical
        return 1.0
    return (index - expected) / (best - expected)
