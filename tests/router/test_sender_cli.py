"""`switchboard sender ban|mute|unban|list|restore` through the real command against the test Redis."""

from __future__ import annotations

import json

from router.audit import Audit
from router.runtime import Runtime
from router.worker import Worker
from tests.router.helpers import drain, message
from tests.router.test_cli import sb


async def test_ban_list_restore_unban(env: dict[str, str], rt: Runtime) -> None:
    out = sb(env, "sender", "ban", "telegram:666", "--for", "1h", "--reason", "scam links", "--by", "alice").stdout
    assert out.startswith("telegram:666 banned until ")
    sb(env, "sender", "mute", "discord:7", "--by", "alice")
    listed = json.loads(sb(env, "sender", "list", "--json").stdout)
    assert [(b["channel"], b["sender"], b["mode"], b["reason"]) for b in listed] == [
        ("discord", "7", "muted", ""),
        ("telegram", "666", "banned", "scam links"),
    ]
    assert listed[1]["until_ms"] - listed[1]["at_ms"] == 3600 * 1000

    await rt.inbox.append(message("withdrawal stuck", user="666"))
    await drain(Worker(rt))
    [conv] = await rt.conversations.get_many(["1"])
    assert conv.status == "held"
    assert sb(env, "sender", "restore", conv.id).stdout.strip() == f"conversation {conv.id} is back in its queue"
    assert [c.id for c in await rt.queues.head("payments")] == [conv.id]
    again = sb(env, "sender", "restore", conv.id, check=False)
    assert again.returncode == 2 and "is not held" in again.stderr

    assert sb(env, "sender", "unban", "telegram:666").stdout.strip() == "telegram:666 unbanned"
    assert sb(env, "sender", "unban", "telegram:666", check=False).returncode == 1
    actions = [e.action for e in await Audit(rt.client, rt.keys, 1000).recent()]
    assert actions == ["sender.unban", "sender.restore", "sender.mute", "sender.ban"]


def test_bad_input_is_refused_with_a_clear_error(env: dict[str, str]) -> None:
    bad = sb(env, "sender", "ban", "telegram", check=False)
    assert bad.returncode == 2 and "a sender is CHANNEL:ID" in bad.stderr
    bad = sb(env, "sender", "mute", "telegram:1", "--for", "soon", check=False)
    assert bad.returncode == 2 and "a duration is a positive number" in bad.stderr
