"""Complaint analysis (issue 20, item 4): complaints grouped into causes, and how well it works.

A pure library (no Redis, no I/O but the labelled sets' files in ``evaluate``): ``cluster``
embeds nothing itself; callers pass the complaints and their vectors (``embed``), so a test can
cluster hand-made vectors. ``causes`` compares a period with the previous one and flags spikes.
router/complaints.py reads the complaints from Redis and calls it (docs/complaints.md).
"""

from __future__ import annotations

from insight.cluster import DEFAULT_THRESHOLD, Cluster, Complaint, agglomerate, cluster, embed, nearest
from insight.metrics import adjusted_rand_index, purity

__all__ = [
    "DEFAULT_THRESHOLD",
    "Cluster",
    "Complaint",
    "adjusted_rand_index",
    "agglomerate",
    "cluster",
    "embed",
    "nearest",
    "purity",
]
