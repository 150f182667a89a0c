"""Agents' corrections become training labels (router/labels.py, lua/conv.lua), secrets masked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from router.errors import BadRequest
from router.labels import Labels
from router.runtime import Runtime
from router.worker import Workers
from tests.conftest import SWITCHBOARD
from tests.router.helpers import drain, message
from tests.secretgen import generate

pytestmark = pytest.mark.cluster(shards=4)


def _in_order(rt: Runtime, items: list[tuple[Any, ...]]) -> list[Any]:
    """``items`` as the labels are read: in time order; over several shards, labels written in
    the same millisecond come in no defined order (stream ids of different streams), so sorted."""
    return list(items) if rt.shards.count == 1 else sorted(items)


async def test_transfer_and_priority_change_label_the_routed_message(rt: Runtime) -> None:
    leak = generate(1, seed=7)[0]
    await rt.inbox.append_many(
        [
            message("my withdrawal has not arrived", user="u1"),
            message(f"someone logged in from another country, here is my wallet: {leak.text}", user="u2"),
            message("what is the trading fee", user="u3"),
        ]
    )
    await drain(Workers(rt))
    convs = {c.sender_id: c for group in ("payments", "security", "general") for c in await rt.queues.head(group)}
    assert set(convs) == {"u1", "u2", "u3"}, convs

    # u1: moved to trading, then raised; u2: raised to P1; u3: untouched (no label).
    await rt.conversations.transfer(convs["u1"].id, "trading", by="alice")
    await rt.conversations.set_priority(convs["u1"].id, 2, by="bob")
    await rt.conversations.set_priority(convs["u2"].id, 1, by="alice")

    corrections = [c async for c in Labels(rt.client, rt.shards).corrections()]
    assert _in_order(rt, [(c.kind, c.by, c.group, c.priority) for c in corrections]) == _in_order(
        rt,
        [
            ("transfer", "alice", "trading", convs["u1"].priority),
            ("priority", "bob", "trading", 2),
            ("priority", "alice", convs["u2"].group, 1),
        ],
    )
    # u1's two corrections, in one shard, keep their order.
    assert [c.kind for c in corrections if c.conversation == convs["u1"].id] == ["transfer", "priority"]
    examples = await Labels(rt.client, rt.shards).examples()
    by_text = {e["text"][:13]: e for e in examples}
    assert {text: e["expect"] for text, e in by_text.items()} == {
        "my withdrawal": {"group": "trading", "priority": "P2"},  # its latest correction wins
        "someone logge": {"group": convs["u2"].group, "priority": "P1"},
    }
    assert by_text["my withdrawal"]["note"].startswith("priority by bob; routed payments")
    # What the model may learn from never holds a secret: the history's masked text is what is labelled.
    for fragment in leak.keys + tuple(w for p in leak.phrases for w in p[:3]):
        assert fragment not in json.dumps(examples, ensure_ascii=False)
    assert "[redacted:" in by_text["someone logge"]["text"]


async def test_model_export_writes_the_examples(rt: Runtime, env: dict[str, str], tmp_path: Path) -> None:
    await rt.inbox.append_many([message("my deposit is missing", user="u9")])
    await drain(Workers(rt))
    conv = (await rt.queues.head("payments"))[0]
    await rt.conversations.transfer(conv.id, "verification", by="carol", reason="KYC hold")
    out = tmp_path / "labels.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *SWITCHBOARD, "model", "export", "--out", str(out), env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "1 labelled message(s) written" in err.decode()
    [line] = out.read_text(encoding="utf-8").splitlines()
    example = json.loads(line)
    assert example["expect"] == {"group": "verification", "priority": f"P{conv.priority}"}
    assert example["text"] == "my deposit is missing" and example["channel"] == "telegram"


async def test_a_close_labels_the_routed_message_with_its_reason_and_spam_is_left_out(rt: Runtime) -> None:
    await rt.inbox.append_many(
        [
            message("my withdrawal has not arrived", user="c1"),
            message("what is the trading fee", user="c2"),
            message("win free btc at scam.example", user="c3"),
        ]
    )
    await drain(Workers(rt))
    convs = {c.sender_id: c for group in ("payments", "general") for c in await rt.queues.head(group)}
    await rt.conversations.close(convs["c1"].id, by="alice")  # resolved, by default
    await rt.conversations.transfer(convs["c2"].id, "trading", by="bob")
    await rt.conversations.close(convs["c2"].id, by="bob", reason="duplicate")
    await rt.conversations.transfer(convs["c3"].id, "security", by="bob")
    await rt.conversations.close(convs["c3"].id, by="bob", reason="spam")
    with pytest.raises(BadRequest, match="close reason must be one of"):
        await rt.conversations.close(convs["c1"].id, by="alice", reason="bored")

    labels = Labels(rt.client, rt.shards)
    closes = [(c.kind, c.reason, c.group) async for c in labels.corrections() if c.kind == "close"]
    assert _in_order(rt, closes) == _in_order(
        rt, [("close", "resolved", convs["c1"].group), ("close", "duplicate", "trading"), ("close", "spam", "security")]
    )
    examples = await labels.examples()
    # c1: the close confirms its routing; c2: closed where the transfer put it; c3: spam, left out.
    assert _in_order(rt, [(e["text"][:13], e["expect"]["group"]) for e in examples]) == _in_order(
        rt, [("my withdrawal", convs["c1"].group), ("what is the t", "trading")]
    )
    assert next(e for e in examples if e["text"].startswith("what is the t"))["note"].startswith(
        "close by bob (duplicate)"
    )
    history = await rt.conversations.history(convs["c2"].id)
    assert {"status": "closed", "by": "bob", "reason": "duplicate"} in [h.data for h in history]
