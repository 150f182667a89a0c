"""Outbound through the real aiogram client: the right chat and topic, splits, 429, 403, rates, greeting."""

from __future__ import annotations

import itertools
from typing import Any

from adapters.text import utf16_len
from router.runtime import Runtime
from tests.telegram.conftest import (
    ACCOUNT,
    FORUM,
    GROUP,
    RULES,
    MakeAdapter,
    consumed,
    conversation_id,
    delivery,
    route,
    until,
)
from tests.telegram.emulator import BOT_USERNAME, Emulator

MARKDOWN = "Use *2FA* _now_: see [help](https://x) `code` <b>not html</b> \\ [x"


async def _conversation(rt: Runtime, key: str, update: dict[str, Any]) -> str:
    """Wait for the adapter to take ``update``, route it, and return its conversation id."""
    await consumed(rt, update)
    await route(rt)
    cid = await conversation_id(rt, key)
    assert cid is not None
    return cid


async def test_agent_reply_reaches_the_topic_as_a_reply(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    update = emu.push_message(emu.chat(FORUM, forum=True), f"@{BOT_USERNAME} withdrawal stuck", thread_id=42)
    await make_adapter()
    cid = await _conversation(rt, f"{FORUM}:42", update)
    reply = await rt.conversations.reply(cid, MARKDOWN, "agent-a")

    assert await delivery(rt, cid, reply) == "delivered"
    [sent] = emu.sent
    assert (sent["chat_id"], sent["thread_id"], sent["text"]) == (FORUM, 42, MARKDOWN)
    assert sent["parse_mode"] is None  # plain text: Markdown characters arrive verbatim
    assert sent["reply_parameters"] == {
        "message_id": update["message"]["message_id"],
        "allow_sending_without_reply": True,
    }
    [record] = [h.data for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert record["status"] == "delivered" and record["detail"].startswith(f"telegram message {FORUM}:")


async def test_private_reply_goes_to_the_chat_without_quote(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    update = emu.push_message(emu.chat(777), "my deposit is missing")
    await make_adapter()
    cid = await _conversation(rt, "777", update)
    reply = await rt.conversations.reply(cid, "Found it, credited now.", "agent-a")

    assert await delivery(rt, cid, reply) == "delivered"
    [sent] = emu.sent
    assert (sent["chat_id"], sent["thread_id"], sent["reply_parameters"]) == (777, None, None)


async def test_429_retry_after_is_waited_out(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    update = emu.push_message(emu.chat(GROUP), f"@{BOT_USERNAME} deposit?")
    adapter = await make_adapter()
    cid = await _conversation(rt, str(GROUP), update)
    emu.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    reply = await rt.conversations.reply(cid, "Checking.", "agent-a")

    assert await delivery(rt, cid, reply) == "delivered"
    first, second = emu.call_times("sendMessage")
    assert second - first >= 1.0
    assert [s["text"] for s in emu.sent] == ["Checking."]
    statuses = [h.data["status"] for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert statuses == ["retrying", "delivered"]
    assert adapter.health()["bots"][ACCOUNT]["rate_limited"] == 1


async def test_403_is_recorded_as_failed_and_not_retried(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    update = emu.push_message(emu.chat(777), "hello?")
    adapter = await make_adapter()
    cid = await _conversation(rt, "777", update)
    emu.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    reply = await rt.conversations.reply(cid, "We are here.", "agent-a")

    assert await delivery(rt, cid, reply) == "failed"
    [record] = [h.data for h in await rt.conversations.history(cid) if h.type == "delivery"]
    assert record["detail"] == "403 Forbidden: bot was blocked by the user"
    assert emu.methods().count("sendMessage") == 1
    health = adapter.health()
    assert health["failed"] == 1 and health["connected"] is True
    assert "blocked" in health["bots"][ACCOUNT]["last_error"]


async def test_long_reply_is_split_cleanly(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    update = emu.push_message(emu.chat(GROUP), f"@{BOT_USERNAME} explain the fees")
    await make_adapter()
    cid = await _conversation(rt, str(GROUP), update)
    paragraphs = [f"Paragraph {i}: " + " ".join(["fee💸"] * 180) for i in range(8)]
    text = "\n\n".join(paragraphs)
    assert utf16_len(text) > 2 * 4096
    reply = await rt.conversations.reply(cid, text, "agent-a")

    assert await delivery(rt, cid, reply) == "delivered"
    parts = [s["text"] for s in emu.sent]
    assert len(parts) == 3 and all(utf16_len(p) <= 4096 for p in parts)
    # Cut at paragraph breaks only: rejoining gives the text back exactly.
    assert "\n\n".join(parts) == text
    assert all(p.startswith("Paragraph") for p in parts)
    # Only the first part quotes the user's message; all go to the same chat.
    assert [s["reply_parameters"] is not None for s in emu.sent] == [True, False, False]
    assert {s["chat_id"] for s in emu.sent} == {GROUP}


async def test_split_reply_resumes_after_a_429_without_repeating_parts(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    update = emu.push_message(emu.chat(777), "long answer please")
    await make_adapter()
    cid = await _conversation(rt, "777", update)
    text = "A" * 4000 + "\n" + "B" * 4000
    # The second part hits a 429: the retry sends only the second part, not the whole reply again.
    emu.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, after=1)
    reply = await rt.conversations.reply(cid, text, "agent-a")

    assert await delivery(rt, cid, reply) == "delivered"
    assert [s["text"][0] for s in emu.sent] == ["A", "B"]
    assert emu.methods().count("sendMessage") == 3


async def test_per_chat_rate_spaces_sends(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    update = emu.push_message(emu.chat(777), "hi")
    await make_adapter(chat_interval_s=0.3)
    cid = await _conversation(rt, "777", update)
    reply = await rt.conversations.reply(cid, "x" * 4000 + "\n" + "y" * 4000 + "\n" + "z" * 100, "agent-a")

    assert await delivery(rt, cid, reply) == "delivered"
    times = emu.call_times("sendMessage")
    assert len(times) == 3
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.28


async def test_start_gets_the_rule_sets_greeting(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    update = emu.push_message(emu.chat(777), "/start")
    await make_adapter()
    await consumed(rt, update)
    await route(rt, RULES)

    await until(lambda: len(emu.sent) == 1, what="the greeting")
    [sent] = emu.sent
    assert sent["chat_id"] == 777
    assert sent["text"] == "Hello! Tell us what happened and an agent will answer here."
