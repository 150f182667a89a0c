"""The channel API (router/channel.py): the namespaced store and its Redis keys, the sandbox channel
built like any other, the channel registry, and the shared health state."""

from __future__ import annotations

import typing

import pytest

import adapters
from adapters.base import Health
from adapters.sandbox import SandboxAdapter, SandboxUsers, from_config
from router.channel import ChannelContext, ConfigError, InvalidPress, OutboxItem, Press, encode, new_id
from router.config import AdapterSection, Settings
from router.errors import BadRequest
from router.model import Button
from router.runtime import Runtime
from tests.router.helpers import presses


async def test_store_keeps_strings_with_a_ttl(rt: Runtime) -> None:
    store = rt.channel_context().store("email")
    await store.set("mid:support:<a@x>", "root\nsubject", ttl_s=60)
    await store.set("mid:support:<b@x>", "kept")
    assert await store.get("mid:support:<a@x>") == "root\nsubject"
    assert await store.get_many(["mid:support:<b@x>", "mid:support:<none@x>"]) == ["kept", None]
    assert await store.get_many([]) == []
    assert 0 < await rt.client.ttl(f"{rt.keys.prefix}email:mid:support:<a@x>") <= 60
    assert await rt.client.ttl(f"{rt.keys.prefix}email:mid:support:<b@x>") == -1  # no TTL asked
    await store.delete("mid:support:<a@x>")
    assert await store.get("mid:support:<a@x>") is None


async def test_store_keys_are_the_keys_deployed_instances_wrote(rt: Runtime) -> None:
    # Written as the e-mail thread index and the sandbox wrote them before the store existed.
    await rt.client.set(f"{rt.keys.prefix}email:mid:support:<old@x>", "<root@x>\nwithdrawal")
    item = OutboxItem(
        id=new_id(),
        conversation="1",
        channel="sandbox",
        account="default",
        conversation_key="bob",
        text="hi",
        author="ann",
    )
    await rt.client.xadd(f"{rt.keys.prefix}sandbox:bob", {"item": encode(item)})
    ctx = rt.channel_context()
    assert await ctx.store("email").get("mid:support:<old@x>") == "<root@x>\nwithdrawal"
    assert [r["text"] for r in await SandboxUsers(ctx).inbox("bob")] == ["hi"]


async def test_store_log_is_oldest_first_and_capped(rt: Runtime) -> None:
    store = rt.channel_context().store("sandbox")
    for i in range(1500):
        await store.log_append("carol", str(i), cap=1000)
    length = await rt.client.xlen(f"{rt.keys.prefix}sandbox:carol")
    assert 1000 <= length < 1500  # trimmed, approximately (whole stream nodes)
    first = int((await store.log_read("carol", 1))[0])
    assert await store.log_read("carol", 3) == [str(first), str(first + 1), str(first + 2)]
    assert await store.log_tail("carol", 3) == ["1499", "1498", "1497"]  # newest first


@pytest.mark.parametrize(
    ("field", "value"), [("data", "x" * 65), ("data", "kb:1:lösung"), ("data", "with space"), ("id", "")]
)
async def test_a_press_that_does_not_fit_is_refused_logged_and_not_recorded(
    rt: Runtime, caplog: pytest.LogCaptureFixture, field: str, value: str
) -> None:
    fields = {"id": "cq1", "channel": "telegram", "account": "bot", "conversation_key": "777", "user": "777"}
    press = Press(**{**fields, "data": "kb:1:solved", "at": 1.0, field: value})
    with pytest.raises(InvalidPress, match=f"press .* refused: .* at `\\$.{field}`"):
        await rt.channel_context().press(press)
    assert "refused" in caplog.text
    assert await presses(rt) == []


async def test_a_reply_with_an_invalid_button_is_refused_before_it_is_queued(rt: Runtime) -> None:
    with pytest.raises(BadRequest, match=r"a reply's button is invalid: .* at `\$\[0\]\.data`"):
        await rt.conversations.reply("1", "hi", "kb", buttons=[Button(label="ok", data="not ascii ✓")])


@pytest.mark.parametrize("namespace", ["", "email:mid", "Email", "1email", "a b"])
def test_store_namespace_is_one_key_segment(rt: Runtime, namespace: str) -> None:
    with pytest.raises(ValueError, match="store namespace"):
        rt.channel_context().store(namespace)


async def test_sandbox_users_send_and_refuse_an_empty_message(rt: Runtime) -> None:
    users = SandboxUsers(rt.channel_context())
    entry = await users.send(" dave ", "my deposit is missing", {"tier": "vip"})
    [(entry_id, _)] = await rt.client.xrange(rt.keys.inbox)
    assert entry_id.decode() == entry
    for user, text in (("", "text"), ("dave", "  ")):
        with pytest.raises(ValueError, match="a sandbox message needs a user and a text"):
            await users.send(user, text)
    assert await users.inbox("dave") == []


def test_sandbox_is_configured_like_any_channel(rt: Runtime) -> None:
    ctx: ChannelContext = rt.channel_context()
    for sections in ({}, {"sandbox": Settings().sandbox}, {"sandbox": {"enabled": True}}):
        [adapter] = adapters.build(ctx, sections)  # on by default, an empty [sandbox] table too
        assert isinstance(adapter, SandboxAdapter)
    assert adapters.build(ctx, {"sandbox": {"enabled": False}}) == []
    assert from_config(ctx, {"enabled": "false"}) == []  # as the environment gives it
    with pytest.raises(ConfigError, match=r"invalid \[sandbox\] configuration: sandbox.colour: Extra inputs"):
        from_config(ctx, {"colour": "blue"})


def test_every_registered_channel_has_a_configuration_section() -> None:
    hints = typing.get_type_hints(Settings)
    sections = {name for name in Settings.model_fields if hints[name] == AdapterSection}
    assert sections == set(adapters.CHANNELS)


def test_health_state() -> None:
    now = [100.0]
    state = Health(connected=True, detail="bot @x", clock=lambda: now[0])
    state.counters["received"] += 2
    state.error("sendMessage: blocked", disconnected=False)
    assert state.connected and state.last_error_at == 100.0
    now[0] = 160.0
    state.stop_for_good("token revoked")
    assert state.as_dict() == {
        "connected": False,
        "detail": "STOPPED: token revoked",
        "fatal": "token revoked",
        "fatal_at": 160.0,
        "last_error": "token revoked",
        "last_error_at": 160.0,
        "received": 2,
    }
