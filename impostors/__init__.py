"""Impostor defence (issue 18): staff known by platform id, lookalike names found by folding.

A pure library (no I/O, no Redis): ``Matcher`` compares a member's names with every staff name
after Unicode folding (impostors/fold.py) and fuzzy matching, and says ``impostor``, ``review``
or ``ok`` with the reason. Adapters call it on joins, renames and group messages; what it finds
goes to the moderators' review queue (router/impostors.py), never to an automatic ban.
"""

from __future__ import annotations

from impostors.fold import Folded, fold, skeleton
from impostors.match import Level, Matcher, Name, StaffMember, Thresholds, Verdict, compare

__all__ = ["Folded", "Level", "Matcher", "Name", "StaffMember", "Thresholds", "Verdict", "compare", "fold", "skeleton"]
