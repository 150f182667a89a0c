"""Impostor defence and /verify through the real discord.py client against the emulator."""

from __future__ import annotations

from typing import Any

from router.config import ImpostorSettings
from router.impostors import ImpostorGuard
from router.runtime import Runtime
from tests.discord.conftest import ELSEWHERE, GUILD, SUPPORT, AdapterFactory, eventually, inbox
from tests.discord.emulator import Emulator

ALERTS = ELSEWHERE  # the moderators' channel in these tests


def staff(emu: Emulator) -> dict[str, Any]:
    user = emu.user("coinly_anna")
    user["global_name"] = "Anna Kovacs"
    return user


def settings(staff_id: str) -> ImpostorSettings:
    return ImpostorSettings.model_validate(
        {
            "staff": {"discord": [{"id": staff_id, "names": ["Anna Kovacs", "coinly_anna"]}]},
            "warning": {"en": "Careful: {name} is not staff."},
        }
    )


def guard(rt: Runtime, staff_id: str) -> None:
    rt.impostor_guard = ImpostorGuard(settings(staff_id), rt.impostor_cases)


def warnings(emu: Emulator, channel: int) -> list[str]:
    return [s["body"]["content"] for s in emu.sent if s["channel_id"] == channel and "Careful" in s["body"]["content"]]


async def test_a_lookalike_posting_anywhere_in_the_server_is_queued_and_warned_about_once(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    anna = staff(emu)
    guard(rt, anna["id"])
    await make_bot()
    fake = emu.user("coinly_anna_support")
    fake["global_name"] = "Аnna Kovacs"  # Cyrillic А
    await emu.post(ELSEWHERE, fake, "DM me, I will help with your withdrawal")  # not a support channel
    await emu.post(ELSEWHERE, fake, "anyone with a stuck withdrawal, DM me")
    await emu.post(SUPPORT, anna, "hello, staff here")  # staff, by id: never flagged

    async def queued() -> bool:
        return bool(warnings(emu, ELSEWHERE)) and len(await inbox(rt)) == 1

    await eventually(queued, what="the warning and the staff message in the inbox")
    assert warnings(emu, ELSEWHERE) == ["Careful: Аnna Kovacs is not staff."]
    [case] = await rt.impostor_cases.open_cases()
    assert case.id == f"discord:test-bot:{fake['id']}"
    assert case.level == "impostor" and case.where == f"guild {GUILD} channel {ELSEWHERE}"


async def test_joins_and_nickname_changes_are_checked_with_the_members_intent(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    anna = staff(emu)
    guard(rt, anna["id"])
    await make_bot(members_intent=True, alert_channel=str(ALERTS))
    joiner = emu.user("anna.kovacs.support")
    await emu.member_join(GUILD, joiner)
    renamer = emu.user("bob")
    await emu.member_join(GUILD, renamer)  # an ordinary member, cached by discord.py from here on
    await emu.member_update(GUILD, renamer, nick="Anna Kovacs | Admin")
    # A display-name change (no nickname): the member's user object changes in place.
    other = emu.user("carl")
    await emu.member_join(GUILD, other)
    await emu.member_update(GUILD, {**other, "global_name": "Anna Kovacs"})

    async def two_cases() -> bool:
        return len(await rt.impostor_cases.open_cases()) == 3 and len(warnings(emu, ALERTS)) == 3

    await eventually(two_cases, what="three cases and their warnings in the moderators' channel")
    cases = {c.user_id: c for c in await rt.impostor_cases.open_cases()}
    assert cases[joiner["id"]].names == ("Anna.Kovacs.Support", "anna.kovacs.support")
    assert cases[renamer["id"]].names == ("Anna Kovacs | Admin", "Bob", "bob")
    assert cases[renamer["id"]].where == f"guild {GUILD}"
    assert cases[other["id"]].names == ("Anna Kovacs", "carl")


async def test_members_intent_refused_by_the_portal_is_a_clear_start_error(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    import pytest

    from router.errors import ConfigError

    emu.members_intent_enabled = False
    with pytest.raises(ConfigError, match="intent"):
        await make_bot(members_intent=True)


async def test_verify_slash_command_answers_by_id_ephemerally(
    rt: Runtime, emu: Emulator, make_bot: AdapterFactory
) -> None:
    anna = staff(emu)
    guard(rt, anna["id"])
    await make_bot()

    async def registered() -> bool:
        return [c["name"] for c in emu.commands.get(GUILD, [])] == ["verify"]

    await eventually(registered, what="/verify registered on the guild")
    asker = emu.user("carol")
    fake = emu.user("coinly_anna")  # a username can be copied on another account: ids cannot
    for who in (anna, fake):
        option = [{"name": "user", "type": 6, "value": who["id"]}]
        await emu.slash(SUPPORT, asker, "verify", option, {"users": {who["id"]: who}})

    async def answered() -> bool:
        return len(emu.responses) == 2

    await eventually(answered, what="two /verify answers")
    bodies = [r["body"] for r in emu.responses]
    assert [b["type"] for b in bodies] == [4, 4]  # CHANNEL_MESSAGE_WITH_SOURCE
    assert all(b["data"]["flags"] & 64 for b in bodies)  # ephemeral
    assert bodies[0]["data"]["content"] == "✅ @coinly_anna is a member of our staff."
    assert bodies[1]["data"]["content"].startswith("⚠️ @coinly_anna is NOT a member of our staff.")
    assert await inbox(rt) == []
