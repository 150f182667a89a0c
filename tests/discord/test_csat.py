"""Satisfaction surveys end to end on Discord, through the real discord.py client (router/csat.py):
the survey comes in the conversation's own channel with five buttons, a press (a component
interaction) records the rating, a low one asks why and the user's next message is the comment; a
second press changes nothing."""

from __future__ import annotations

import pytest

from adapters.discord_bot import DiscordAdapter
from router.config import Settings
from router.csat import CsatService
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import conversation_id, eventually, pressed, wait_inbox
from tests.discord.emulator import Emulator
from tests.router.helpers import drain
from tests.router.test_csat import MIN, closed_by_agent, csat_entries, csat_on, now_clock


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return csat_on(settings)


async def test_a_low_rating_asks_why_and_takes_the_comment(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    clock = now_clock()
    surveys = CsatService(rt, owner="A", clock=clock, block_ms=20)
    await surveys._presses.start()
    user = emu.user("olga")
    dm = emu.dm(user)
    await emu.post(dm, user, "hello, my withdrawal is stuck since this morning")
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    await closed_by_agent(rt, clock, cid)
    clock.now += MIN  # payments: one minute
    assert await surveys.tick() == 1

    async def surveyed() -> bool:
        return any(m.get("components") for m in emu.messages.get(dm, []))

    await eventually(surveyed, 10, "the survey on Discord")
    [survey] = [m for m in emu.messages[dm] if m.get("components")]
    assert survey["content"].startswith("How did we do?")
    [row] = survey["components"]
    buttons = row["components"]
    assert [b["label"] for b in buttons] == ["1", "2", "3", "4", "5"]

    await pressed(emu, survey, user, ":1")
    await surveys.press_step()

    async def asked() -> bool:
        return any(m["content"].startswith("What could we have done better?") for m in emu.messages.get(dm, []))

    await eventually(asked, 10, "the follow-up question")
    await pressed(emu, survey, user, ":5")  # the first press stands
    await surveys.press_step()
    assert surveys.counts["late"] == 1

    await emu.post(dm, user, "it took three days and nobody told me why")
    await wait_inbox(rt, 2)
    await drain(Worker(rt))
    conv = await rt.conversations.get(cid)
    assert conv.status == "closed" and conv.messages == 1
    entries = csat_entries(await rt.conversations.history(cid))
    assert [(e["rating"], e["comment"]) for e in entries] == [
        (1, None),
        (1, "it took three days and nobody told me why"),
    ]
    assert (entries[0]["group"], entries[0]["agent"], entries[0]["channel"]) == ("payments", "ann", "discord")
