"""The knowledge base's answer end to end on Discord, through the real discord.py client: the answer
goes out with its buttons, "talk to a person" (a component interaction) puts the conversation in
its queue, "this solved it" closes it (router/answerer.py, router/actions.py)."""

from __future__ import annotations

from adapters.discord_bot import DiscordAdapter
from router.answerer import Answerer
from router.runtime import Runtime
from router.worker import Worker
from tests.discord.conftest import conversation_id, eventually, pressed, wait_inbox
from tests.discord.emulator import Emulator, Json
from tests.router.helpers import drain
from tests.router.test_answerer import FAQ, answerer, queued, record


async def _answered(rt: Runtime, emu: Emulator, name: str) -> tuple[str, str, Json, Json, Answerer]:
    """``name`` asks the FAQ in a DM, the answerer answers; (conversation, group, message, user,
    the answerer)."""
    user = emu.user(name)
    dm = emu.dm(user)
    await emu.post(dm, user, FAQ)
    await wait_inbox(rt, 1)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm))
    group = (await rt.conversations.get(cid)).group
    a = await answerer(rt, groups=[group])
    # The answerer's consumer groups start at the event streams' ends: a second message from
    # another user is the one it answers.
    other = emu.user(name + "-2")
    dm2 = emu.dm(other)
    await emu.post(dm2, other, FAQ)
    await wait_inbox(rt, 2)
    await drain(Worker(rt))
    cid = await conversation_id(rt, str(dm2))
    await a.step()

    async def sent() -> bool:
        return any(m.get("components") for m in emu.messages.get(dm2, []))

    await eventually(sent, 10, "the answer on Discord")
    [message] = [m for m in emu.messages[dm2] if m.get("components")]
    assert message["content"].startswith("Resetting your password")
    assert (await rt.conversations.get(cid)).status == "answered" and not await queued(rt, cid, group)
    return cid, group, message, other, a


async def test_talk_to_a_person_queues_the_conversation(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    cid, group, message, user, a = await _answered(rt, emu, "alice")
    await pressed(emu, message, user, ":human")
    await a.press_step()
    assert await queued(rt, cid, group)
    assert (await record(rt, cid))["outcome"] == "human"


async def test_this_solved_it_closes_the_conversation(rt: Runtime, emu: Emulator, bot: DiscordAdapter) -> None:
    cid, _, message, user, a = await _answered(rt, emu, "bob")
    await pressed(emu, message, user, ":solved")
    await a.press_step()
    assert (await rt.conversations.get(cid)).status == "closed"
    assert (await record(rt, cid))["outcome"] == "confirmed"
