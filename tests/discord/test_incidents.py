"""Incidents end to end on Discord, through the real discord.py client: the status text in each
user's DM, then the resolution once (router/incident_link.py, router/incident_broadcast.py)."""

from __future__ import annotations

import asyncio

from adapters.discord_bot import DiscordAdapter
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import conversation_id, eventually, wait_inbox
from tests.discord.emulator import Emulator
from tests.router.helpers import drain
from tests.router.test_incidents import RESOLVED, TEXTS, FakeClock, broadcast_all, link_all, linker, open_tron


async def test_status_text_then_one_resolution_per_dm(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    clock = FakeClock()
    link = await linker(rt, clock)
    inc = await open_tron(rt)
    dms = []
    for n, name in enumerate(("alice", "bob"), 1):
        user = emu.user(name)
        dm = emu.dm(user)
        dms.append(dm)
        await emu.post(dm, user, "is TRON withdrawal down? my withdrawal is stuck")
        await wait_inbox(rt, n)
    await drain(Worker(rt))
    await link_all(link)

    def contents(dm: int) -> list[str]:
        return [str(m["content"]) for m in emu.messages.get(dm, []) if m["author"]["id"] == emu.bot["id"]]

    async def status_sent() -> bool:
        return all(contents(dm) == [TEXTS["en"]] for dm in dms)

    await eventually(status_sent, 10, "the status texts on Discord")
    await rt.incidents.resolve(inc.id, "admin", RESOLVED, "requeue")
    await broadcast_all(rt, inc.id, clock)

    async def resolved() -> bool:
        return all(contents(dm) == [TEXTS["en"], RESOLVED["en"]] for dm in dms)

    await eventually(resolved, 10, "the resolutions on Discord")
    await asyncio.sleep(0.3)
    assert all(contents(dm) == [TEXTS["en"], RESOLVED["en"]] for dm in dms)
    for dm in dms:
        conv = await rt.conversations.get(await conversation_id(rt, str(dm)))
        assert conv.status == "new"  # re-queued for an agent
