"""The labelled complaints: well formed, apart, and scored as docs/complaints.md says."""

from __future__ import annotations

from collections import Counter

import pytest

from insight.evaluate import PARTS, load, score, vectors_of


@pytest.mark.parametrize("part", PARTS)
def test_each_part_has_enough_of_every_cause_and_language(part: str) -> None:
    rows = load(part)
    assert len(rows) >= 160
    causes = Counter(r.cause for r in rows)
    assert len(causes) >= 8 and min(causes.values()) >= 15
    assert {"zh", "en", "ru", "es", "tr", "vi"} <= {r.complaint.lang for r in rows}


def test_no_text_is_in_both_parts() -> None:
    dev, test = ({r.complaint.text for r in load(part)} for part in PARTS)
    assert not dev & test


DOCUMENTED = {"dev": (11, 0.875, 0.709), "test": (14, 0.812, 0.536)}  # docs/complaints.md, "Measured"


def test_the_figures_in_the_docs() -> None:
    """docs/complaints.md quotes these; a change of model or method must update them there."""
    found = {}
    for part in PARTS:
        rows = load(part)
        s = score(part, rows, vectors_of(rows), 0.94)
        found[part] = (s.clusters, round(s.purity, 3), round(s.ari, 3))
    # As documented, within what a machine moves: the same code and lock gave test 13 clusters,
    # 0.825, 0.575 on an AVX-512 Xeon (not BLAS's kernel choice: OPENBLAS_CORETYPE=Haswell gives
    # the same), and average linkage at a threshold turns a last bit into another merge now and then.
    for part, (clusters, purity, ari) in DOCUMENTED.items():
        got = found[part]
        assert abs(got[0] - clusters) <= 2 and abs(got[1] - purity) <= 0.04 and abs(got[2] - ari) <= 0.05, found
