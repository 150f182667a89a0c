"""``switchboard bench surge`` small: nothing lost or doubled, and the P1 situations the precheck
caught are routed ahead of the backlog (docs/surge.md)."""

from __future__ import annotations

import io
import json

from router.bench_surge import P1_TEXTS, SURGE_TEXTS, main, surge_corpus
from router.config import load_settings


def test_the_corpus_mixes_p1_the_surge_question_and_the_rest() -> None:
    envs = surge_corpus(2000)
    kinds = [e.meta["drill"] for e in envs]
    assert kinds.count("p1") == 20
    p1_users = [e.conversation_key for e in envs if e.meta["drill"] == "p1"]
    assert len(set(p1_users)) == 20  # each the first message of its conversation
    for kind, texts in (("p1", P1_TEXTS), ("surge", SURGE_TEXTS)):
        written = {t.format(n=n) for t in texts for n in range(5, 501)}
        assert {e.text for e in envs if e.meta["drill"] == kind} <= written
    assert 0.55 < kinds.count("surge") / 2000 < 0.65


def test_a_small_surge_loses_nothing_and_routes_p1_first() -> None:
    out = io.StringIO()
    status = main(load_settings(None), True, 3000, out=out)
    result = json.loads(out.getvalue())
    assert status == 0
    assert result["messages"] == 3000
    assert (result["lost"], result["duplicated"], result["dead_letters"]) == (0, 0, 0)
    assert result["p1_messages"] == 30
    # With the default precheck ("model"); the rules alone miss one text in ten (a scam told in
    # plain words).
    assert result["p1_lane"] == "model"
    assert result["p1_in_lane"] >= 27
    # The model's suspects are P1 at its threshold (0.2, chosen for recall): one of the drill's
    # ordinary texts can sit over it after a retraining ("Meu saque está pendente há um dia, o que
    # faço?" was at 0.204 with the augmentation's model of 2026-12-07, and is at 0.186 with the two
    # views that followed it, docs/triage.md; this drill had no false positive then), and then each of its
    # ~100 copies goes through the lane too. That costs the lane capacity, not its order (below);
    # the bound is issue 15's for questions raised to P1: 5% of what is not P1.
    assert result["lane_false_positives"] <= 0.05 * (result["messages"] - result["p1_messages"])
    # Ahead of the backlog. (A backlog of 3,000 drains in about a second, so the margins are tens
    # of milliseconds: the lane's p99 under the backlog's median held on a quiet machine and not
    # beside a CI run; the drill's 100,000 is where the figures are measured, docs/surge.md.)
    assert result["p1_lane_latency_p50_ms"] < result["backlog_latency_p50_ms"]
    assert result["p1_lane_latency_p99_ms"] < result["backlog_latency_p99_ms"]
    # The incident open through the drill links the conversations that start with the surge's
    # question and collapses them out of the queues (none of them is P1). Within 2%: four
    # appenders at once reorder messages, so "first" in the corpus is not always first in Redis.
    assert result["incident_conversations"] > 1000
    assert abs(result["incident_linked"] - result["incident_conversations"]) <= 0.02 * result["incident_conversations"]
    # Each linked one collapsed, unless it is P1 by then (a P1 is never collapsed): a follow-up the
    # model raised to P1 before the linker reached the conversation (a lane false positive above).
    assert result["incident_linked"] - result["lane_false_positives"] <= result["incident_collapsed"]
    assert result["incident_collapsed"] <= result["incident_linked"]
    assert result["queued_after"] < result["incident_conversations"]
