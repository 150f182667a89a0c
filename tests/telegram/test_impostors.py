"""Impostor defence and /verify through the real aiogram client against the Bot API emulator."""

from __future__ import annotations

from router.channel import ChannelContext
from router.config import ImpostorSettings
from router.impostors import ImpostorGuard
from router.model import decode_envelope
from router.runtime import Runtime
from tests.conftest import free_port
from tests.telegram.conftest import GROUP, OTHER_GROUP, MakeAdapter, consumed, until
from tests.telegram.emulator import BOT_USERNAME, Emulator

STAFF_ID = 4242
SETTINGS = ImpostorSettings.model_validate(
    {
        "staff": {"telegram": [{"id": STAFF_ID, "names": ["Anna Kovacs", "coinly_anna"]}]},
        "warning": {"en": "Careful: {name} is not staff."},
    }
)


def context(rt: Runtime, settings: ImpostorSettings = SETTINGS) -> ChannelContext:
    rt.impostor_guard = ImpostorGuard(settings, rt.impostor_cases)
    return rt.channel_context()


def warnings(emu: Emulator, chat: int) -> list[str]:
    return [s["text"] for s in emu.sent if s["chat_id"] == chat and s["text"].startswith("Careful")]


async def test_a_lookalike_posting_in_a_group_is_queued_and_warned_about_once(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    await make_adapter(context(rt))
    group = emu.chat(GROUP)
    fake = emu.user(666, "Аnna Kovacs", "coinly_anna_support")  # Cyrillic А
    # Not addressed to the bot: not a support message, but its sender is still checked.
    emu.push_message(group, "DM me for help with your withdrawal", sender=fake)
    last = emu.push_message(group, "I am the admin, DM me", sender=fake)
    await consumed(rt, last)
    await until(lambda: warnings(emu, GROUP), what="the group warning")
    assert warnings(emu, GROUP) == ["Careful: Аnna Kovacs is not staff."]
    [case] = await rt.impostor_cases.open_cases()
    assert case.id == "telegram:supportbot:666"
    assert case.level == "impostor" and case.staff_id == str(STAFF_ID) and case.where == f"chat {GROUP}"
    assert case.names == ("Аnna Kovacs", "coinly_anna_support")
    assert await rt.client.xlen(rt.keys.inbox) == 0  # nothing of it became a conversation


async def test_joins_and_renames_are_checked_and_staff_never_flagged(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    await make_adapter(context(rt))
    group = emu.chat(OTHER_GROUP)  # any group the bot sits in, allowed_chats or not
    staff = emu.user(STAFF_ID, "Anna Kovacs", "coinly_anna")
    emu.push_chat_member(group, staff)
    emu.push_message(group, None, sender=emu.user(1, "Admin", "admin"), new_chat_members=[emu.user(501, "Bob", "bob")])
    emu.push_chat_member(group, emu.user(502, "Anna Kovacs Support", None))
    honest = emu.user(503, "Anna Kowalska", "annak")
    emu.push_message(group, "hi all", sender=honest)
    # The honest member renames themselves to the staff name: seen on their next message.
    last = emu.push_message(group, "hi again", sender=emu.user(503, "Anna  Kovacs", "annak"))
    await consumed(rt, last)
    cases = {c.user_id: c for c in await rt.impostor_cases.open_cases()}
    assert sorted(cases) == ["502", "503"]
    assert cases["502"].where == f"joined chat {OTHER_GROUP}"
    assert cases["503"].names == ("Anna  Kovacs", "annak")
    # A namesake is for moderators to judge: dismissed, it stays quiet under the same names.
    await rt.impostor_cases.decide(cases["503"].id, "dismissed", "mod")
    assert [c.user_id for c in await rt.impostor_cases.open_cases()] == ["502"]


async def test_verify_answers_by_id_for_a_reply_and_for_a_username_seen_before(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    await make_adapter(context(rt))
    group = emu.chat(GROUP)
    staff_msg = emu.message(group, "hello", sender=emu.user(STAFF_ID, "Anna Kovacs", "coinly_anna"))
    emu.push({"message": staff_msg})
    fake_msg = emu.message(group, "DM me", sender=emu.user(667, "Anna Kovacs", "coinly_anna_help"))
    emu.push({"message": fake_msg})
    asker = emu.user(800, "Carol", "carol")
    emu.push_message(group, "/verify", sender=asker, reply_to=staff_msg)
    emu.push_message(group, f"/verify@{BOT_USERNAME}", sender=asker, reply_to=fake_msg)
    emu.push_message(group, "/verify @coinly_anna_help", sender=asker)
    emu.push_message(group, "/verify @nobody_here", sender=asker)
    last = emu.push_message(group, "/verify@OtherBot", sender=asker, reply_to=fake_msg)  # not ours
    await consumed(rt, last)
    await until(lambda: len([s for s in emu.sent if "staff" in s["text"] or "seen" in s["text"]]) >= 5)
    answers = [s["text"] for s in emu.sent if not s["text"].startswith("Careful")]
    assert answers[0] == "✅ @coinly_anna is a member of our staff."
    assert answers[1].startswith("⚠️ @coinly_anna_help is NOT a member of our staff.")
    assert answers[2].startswith("⚠️ @coinly_anna_help is NOT")
    assert answers[3].startswith("I have not seen @nobody_here in this group")
    assert len(answers) == 4
    # /verify is answered in place, quoting the question; it is not a support message.
    assert all(s["reply_parameters"] is not None for s in emu.sent if not s["text"].startswith("Careful"))
    assert await rt.client.xlen(rt.keys.inbox) == 0


async def test_webhook_updates_are_screened_and_verify_is_answered(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    port = free_port()
    await make_adapter(context(rt), mode="webhook", webhook={"url": f"http://127.0.0.1:{port}/hook", "port": port})
    group = emu.chat(GROUP)
    fake = emu.message(group, "DM me", sender=emu.user(668, "Anna Kovacs Support", None))
    assert await emu.deliver({"update_id": 1, "message": fake}) == 200
    verify = emu.message(group, "/verify", sender=emu.user(801, "Dan", "dan"), reply_to=fake)
    assert await emu.deliver({"update_id": 2, "message": verify}) == 200
    [case] = await rt.impostor_cases.open_cases()
    assert case.user_id == "668"
    await until(lambda: any("NOT a member" in s["text"] for s in emu.sent), what="the /verify answer")
    assert await rt.client.xlen(rt.keys.inbox) == 0


async def test_a_forwarded_dm_from_a_lookalike_is_answered_with_the_warning_each_time(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    # Users forward a stranger's DM to ask "is this really your support?": the account it came
    # from is checked by id, a case opens once, and every forwarder gets the warning under it.
    await make_adapter(context(rt))
    fake = emu.user(669, "Anna Kovacs", "coinly_anna_desk")
    staff = emu.user(STAFF_ID, "Anna Kovacs", "coinly_anna")
    dm = "send me your 2FA code to verify the withdrawal"
    alice, bob = emu.user(901, "Alice", "alice"), emu.user(902, "Bob", None)
    emu.push_message(emu.chat(901), dm, sender=alice, forward_origin={"type": "user", "date": 1, "sender_user": fake})
    emu.push_message(emu.chat(902), dm, sender=bob, forward_origin={"type": "user", "date": 1, "sender_user": fake})
    emu.push_message(
        emu.chat(901), "hi", sender=alice, forward_origin={"type": "user", "date": 1, "sender_user": staff}
    )
    last = emu.push_message(
        emu.chat(901),
        "Hello",
        sender=alice,
        forward_origin={"type": "hidden_user", "date": 1, "sender_user_name": "Anna K"},
    )
    await consumed(rt, last)
    await until(lambda: len(warnings(emu, 901)) == 1 and len(warnings(emu, 902)) == 1, what="both warnings")
    [case] = await rt.impostor_cases.open_cases()
    assert case.user_id == "669" and case.level == "impostor" and case.where == "forwarded by 901 in chat 901"
    warned = [s for s in emu.sent if s["text"].startswith("Careful")]
    assert len(warned) == 2 and all(s["reply_parameters"] is not None for s in warned)  # under each forward
    # The forwards are support messages too, marked as someone else's words.
    envs = [decode_envelope(fields[b"env"]) for _, fields in await rt.client.xrange(rt.keys.inbox)]
    assert [(e.meta["forwarded_from"], e.sender.attributes["forwarded"]) for e in envs] == [
        ("Anna Kovacs (@coinly_anna_desk, id 669)", "user"),
        ("Anna Kovacs (@coinly_anna_desk, id 669)", "user"),
        (f"Anna Kovacs (@coinly_anna, id {STAFF_ID})", "user"),
        ("Anna K", "hidden_user"),
    ]
