"""The knowledge base's answer end to end on Telegram, through the real aiogram client: the answer
goes out with its inline keyboard, "talk to a person" (a callback query) puts the conversation in
its queue, "this solved it" closes it (router/answerer.py, router/actions.py)."""

from __future__ import annotations

from typing import Any

from router.runtime import Runtime
from tests.router.test_answerer import FAQ, answerer, queued, record
from tests.telegram.conftest import MakeAdapter, consumed, conversation_id, route, until
from tests.telegram.emulator import Emulator


async def _answered(rt: Runtime, emu: Emulator, chat: int, group: str) -> tuple[str, dict[str, Any], Any]:
    a = await answerer(rt, groups=[group])
    update = emu.push_message(emu.chat(chat), FAQ)
    await consumed(rt, update)
    await route(rt)
    cid = await conversation_id(rt, str(chat))
    assert cid is not None and await queued(rt, cid, group)
    await a.step()
    await until(lambda: any(m.get("reply_markup") for m in emu.sent_messages), what="the answer on Telegram")
    [message] = [m for m in emu.sent_messages if m.get("reply_markup")]
    assert message["text"].startswith("Resetting your password")
    return cid, message, a


async def _group(rt: Runtime, emu: Emulator) -> str:
    """The group the test rules route the FAQ to (the answerer is told to answer there)."""
    update = emu.push_message(emu.chat(1), FAQ)
    await consumed(rt, update)
    await route(rt)
    cid = await conversation_id(rt, "1")
    assert cid is not None
    return (await rt.conversations.get(cid)).group


async def test_talk_to_a_person_queues_the_conversation(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    await make_adapter()
    group = await _group(rt, emu)
    cid, message, a = await _answered(rt, emu, 777, group)
    assert (await rt.conversations.get(cid)).status == "answered" and not await queued(rt, cid, group)
    [_, human] = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    assert human["callback_data"].endswith(":human")

    tap = emu.push_press(message, human["callback_data"])
    await consumed(rt, tap)
    await a.press_step()
    assert await queued(rt, cid, group)
    assert (await record(rt, cid))["outcome"] == "human"
    assert emu.answers[-1]["callback_query_id"] == tap["callback_query"]["id"]


async def test_this_solved_it_closes_the_conversation(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    await make_adapter()
    group = await _group(rt, emu)
    cid, message, a = await _answered(rt, emu, 778, group)
    [solved, _] = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    tap = emu.push_press(message, solved["callback_data"])
    await consumed(rt, tap)
    await a.press_step()
    assert (await rt.conversations.get(cid)).status == "closed"
    assert (await record(rt, cid))["outcome"] == "confirmed"
