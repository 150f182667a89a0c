"""Two replicas with the same bot: one gateway session, a standby that takes over on lease loss.

Two adapters in one process stand for two replicas (their contexts carry different instance
names, the lease owner tokens). Nothing here waits for a lease to expire (the test deletes it, or
its holder releases it), so the TTL only bounds how late a renewal may be: 2 s, not less, because a
CI machine under load stalled this process past a 0.6 s TTL and the holder lost the lease again.
"""

from __future__ import annotations

from typing import Any

from adapters.discord_bot import DiscordAdapter, from_config
from router.config import LeaseSettings
from router.runtime import Runtime
from tests.discord.conftest import ACCOUNT, eventually, inbox, wait_inbox
from tests.discord.emulator import Emulator

LEASES = LeaseSettings(ttl_s=2, retry_s=0.05, max_skew_s=0)


def replica(rt: Runtime, instance: str, section: dict[str, Any]) -> DiscordAdapter:
    ctx = rt.channel_context(instance, leases=LEASES)
    [adapter] = from_config(ctx, section)
    assert isinstance(adapter, DiscordAdapter)
    return adapter


def live_sessions(emu: Emulator) -> int:
    return sum(1 for s in emu.sessions.values() if s.ws is not None and not s.ws.closed)


async def test_one_gateway_session_per_bot_and_a_standby_takes_over_on_loss(
    rt: Runtime, emu: Emulator, section: dict[str, Any]
) -> None:
    a, b = replica(rt, "replica-a", section), replica(rt, "replica-b", section)
    await a.start()
    await b.start()  # returns without waiting for a READY that a standby never gets
    try:
        assert emu.identifies == 1 and live_sessions(emu) == 1
        assert a.health()["lease"] == "held"
        assert b.health()["lease"] == "standby" and b.health()["holder"] == "replica-a"
        assert "standby: replica-a holds the gateway" in b.health()["detail"]
        alice = emu.user("alice")
        dm = emu.dm(alice)
        await emu.post(dm, alice, "my withdrawal has not arrived")
        await wait_inbox(rt, 1)

        # A loses its lease (expired while it was paused, say): its session ends at once and B's
        # begins; A stands by, still logged in for sending replies.
        await rt.client.delete(rt.keys.lease(f"adapter:discord:{ACCOUNT}"))

        async def b_took_over() -> bool:
            return b.health()["lease"] == "held" and a.health()["lease"] == "standby" and emu.identifies == 2

        await eventually(b_took_over, what="B to take the gateway over")

        # A's standby learns who holds the lease on its next attempt, not the moment it lost it
        # (a CI run read the health record in between: holder None).
        async def a_stands_by() -> bool:
            return live_sessions(emu) == 1 and a.health()["holder"] == "replica-b"

        await eventually(a_stands_by, what="A's session to end and A to see B hold the lease")
        assert a._logged_in
        await emu.post(dm, alice, "any news?")
        await wait_inbox(rt, 2)
        assert [e.text for e in await inbox(rt)] == ["my withdrawal has not arrived", "any news?"]

        # B stops cleanly: it releases the lease, and A takes over well before any TTL.
        await b.close()

        async def a_back() -> bool:
            return a.health()["lease"] == "held" and emu.identifies == 3 and live_sessions(emu) == 1

        await eventually(a_back, within=15, what="A to take the gateway back")
    finally:
        await b.close()
        await a.close()
