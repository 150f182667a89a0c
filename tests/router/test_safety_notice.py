"""The safety notice on a conversation's first reply (router/outbox.py), in its language, exactly
once per conversation however its replies are sent; off when configured so."""

from __future__ import annotations

import asyncio

import pytest

from router.config import SafetyNoticeSettings
from router.model import OutboxItem
from router.outbox import OutboxConsumer
from router.runtime import Runtime
from router.worker import Workers
from tests.router.helpers import drain, message

pytestmark = pytest.mark.cluster(shards=4)

NOTICE = SafetyNoticeSettings(text={"en": "Staff never DM first.", "ru": "Сотрудники не пишут первыми."})


class Sends:
    def __init__(self, expect: int) -> None:
        self.items: list[OutboxItem] = []
        self.expect = expect
        self.done = asyncio.Event()

    async def __call__(self, item: OutboxItem) -> str:
        self.items.append(item)
        if len(self.items) >= self.expect:
            self.done.set()
        return ""


async def send_all(rt: Runtime, expect: int, notice: SafetyNoticeSettings | None) -> dict[str, str]:
    sends = Sends(expect)
    consumer = OutboxConsumer(rt.client, rt.shards, "telegram", "t1", block_ms=50, notice=notice)
    task = asyncio.create_task(consumer.run(sends))
    try:
        await asyncio.wait_for(sends.done.wait(), 5)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)
    return {item.id: item.text for item in sends.items}


async def conversation(rt: Runtime, text: str, user: str) -> str:
    await rt.inbox.append(message(text, user=user))
    await drain(Workers(rt))
    cid = await rt.conversations.claim("payments", "agent-a")
    assert cid is not None
    return cid


async def test_only_the_first_reply_of_each_conversation_carries_the_notice(rt: Runtime) -> None:
    en = await conversation(rt, "my deposit is missing", "u1")
    ru = await conversation(rt, "мой deposit не пришёл на счёт, помогите пожалуйста", "u2")
    first_en = await rt.conversations.reply(en, "Looking into it", "agent-a")
    second_en = await rt.conversations.reply(en, "Found it", "agent-a")
    first_ru = await rt.conversations.reply(ru, "Проверяем", "agent-a")
    # Both replies of a conversation are in flight at once: still only the first is marked.
    sent = await send_all(rt, 3, NOTICE)
    # "First" is the smallest reply id: creation order to the millisecond (two replies made in the
    # same millisecond are ordered by the ids' random part), and exactly one either way.
    marked = {reply for reply in (first_en, second_en) if sent[reply].endswith("\n\nStaff never DM first.")}
    assert marked == {min(first_en, second_en)}
    assert {sent[first_en].split("\n\n")[0], sent[second_en].split("\n\n")[0]} == {"Looking into it", "Found it"}
    assert sent[first_ru] == "Проверяем\n\nСотрудники не пишут первыми."
    # The history keeps the reply as the agent wrote it.
    outbound = [h.data["text"] for h in await rt.conversations.history(en) if h.type == "outbound"]
    assert outbound == ["Looking into it", "Found it"]
    # Later replies, sent after the first was delivered, are plain too.
    third = await rt.conversations.reply(en, "Done", "agent-a")
    assert (await send_all(rt, 1, NOTICE))[third] == "Done"


async def test_the_notice_can_be_turned_off(rt: Runtime) -> None:
    cid = await conversation(rt, "my deposit is missing", "u3")
    reply = await rt.conversations.reply(cid, "Looking into it", "agent-a")
    off = NOTICE.model_copy(update={"enabled": False})
    assert (await send_all(rt, 1, off))[reply] == "Looking into it"
