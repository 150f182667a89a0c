"""Incidents end to end on Telegram, through the real aiogram client: a matching message is
answered with the status text in its user's language, and the resolution reaches each chat once
(router/incident_link.py, router/incident_broadcast.py)."""

from __future__ import annotations

import asyncio

from router.runtime import Runtime
from tests.router.test_incidents import RESOLVED, TEXTS, FakeClock, broadcast_all, link_all, linker, open_tron
from tests.telegram.conftest import MakeAdapter, consumed, conversation_id, route, until
from tests.telegram.emulator import Emulator


def texts_in(emu: Emulator, chat: int) -> list[str]:
    return [str(m["text"]) for m in emu.sent_messages if m["chat"]["id"] == chat]


async def test_status_text_then_one_resolution_per_chat(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    await make_adapter()
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    chats = {801: "my TRON withdrawal is stuck", 802: "我的TRC20提现还没到账"}
    for chat, text in chats.items():
        await consumed(rt, emu.push_message(emu.chat(chat), text))
    await route(rt)
    await link_all(link)
    want = {801: TEXTS["en"], 802: TEXTS["zh"]}
    await until(lambda: all(texts_in(emu, c) == [t] for c, t in want.items()), what="the status texts on Telegram")
    for chat in chats:
        cid = await conversation_id(rt, str(chat))
        assert cid is not None and (await rt.conversations.get(cid)).status == "incident"

    await rt.incidents.resolve(inc.id, "admin", RESOLVED, "close")
    await broadcast_all(rt, inc.id, clock)
    done = {801: [TEXTS["en"], RESOLVED["en"]], 802: [TEXTS["zh"], RESOLVED["zh"]]}
    await until(lambda: all(texts_in(emu, c) == t for c, t in done.items()), what="the resolutions on Telegram")
    await asyncio.sleep(0.3)  # nothing more arrives
    assert {c: texts_in(emu, c) for c in chats} == done
    for chat in chats:
        cid = await conversation_id(rt, str(chat))
        assert cid is not None and (await rt.conversations.get(cid)).status == "closed"
