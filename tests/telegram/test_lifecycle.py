"""Start, stop, configuration errors, webhook mode and health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.telegram import TelegramAdapter, from_config
from router.errors import ConfigError
from router.runtime import Runtime
from tests.conftest import free_port
from tests.telegram.conftest import ACCOUNT, MakeAdapter, consumed, section, until
from tests.telegram.emulator import BOT_USERNAME, Emulator


async def test_bad_token_fails_clearly_at_start(rt: Runtime, emu: Emulator) -> None:
    cfg = section(emu, token="999:revoked-token")
    [adapter] = from_config(rt.channel_context(), cfg)
    with pytest.raises(ConfigError, match=r"bot 'supportbot'.*refused the token \(Unauthorized\).*@BotFather"):
        await adapter.start()
    assert emu.methods() == ["getMe"]  # no polling, no retry loop
    assert "revoked" not in str(adapter.health())  # the token never shows


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "no bot configured"),
        ({"token": "not a token"}, r"\[telegram\] token: not a bot token"),
        ({"bots": {"a": {"token": "1:x", "mode": "carrier-pigeon"}}}, r"telegram.bots.a.*mode"),
        ({"bots": {"a": {"token": "1:x", "mode": "webhook"}}}, "needs a \\[webhook\\] table"),
        ({"bots": {"a": {"token": "1:x"}, "b": {"token": "1:x"}}}, "same token"),
        ({"bots": {"a": {"token_file": "/nonexistent/token"}}}, "cannot read secret file"),
        ({"bots": {"a": {"tokn": "1:x"}}}, "tokn: Extra inputs are not permitted"),
        ({"token": "1:x", "api_base": "api.telegram.org"}, "api_base: must be an absolute"),
    ],
)
def test_configuration_errors_name_the_setting(rt: Runtime, raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_config(rt.channel_context(), raw)


def test_env_and_toml_tables_merge_and_token_file_is_read(rt: Runtime, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("42:from-a-file\n")
    raw = {
        "chat_interval_s": 2.0,  # top level: a default for every bot
        "bots": {"SupportBot": {"allowed_chats": [-100]}, "supportbot": {"token_file": str(secret)}},
    }
    [adapter] = from_config(rt.channel_context(), raw)
    assert isinstance(adapter, TelegramAdapter)
    runner = adapter.bots["supportbot"]
    assert runner.cfg.allowed_chats == [-100] and runner.cfg.chat_interval_s == 2.0
    assert runner.bot.token == "42:from-a-file"
    assert from_config(rt.channel_context(), {"enabled": False, "token": "1:x"}) == []
    # Lists from the environment arrive as text.
    for text in ("[-1001, -1002]", "-1001,-1002", "-1001 -1002"):
        [env_adapter] = from_config(rt.channel_context(), {"token": "1:x", "allowed_chats": text})
        assert isinstance(env_adapter, TelegramAdapter)
        assert env_adapter.bots["default"].cfg.allowed_chats == [-1001, -1002]


async def test_webhook_mode_verifies_the_secret_token(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    adapter = await make_adapter(mode="webhook", webhook={"url": url, "port": port})
    assert emu.webhook is not None and emu.webhook["url"] == url
    secret = emu.webhook["secret_token"]
    assert len(secret) >= 32
    update = {"update_id": 1, "message": emu.message(emu.chat(777), "deposit missing")}

    assert await emu.deliver(update, secret=None) == 403
    assert await emu.deliver(update, secret="guess") == 403
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 405
    assert await rt.client.xlen(rt.keys.inbox) == 0

    assert await emu.deliver(update) == 200
    assert await emu.deliver(update) == 200  # Telegram redelivers: absorbed by the idempotent append
    assert await rt.client.xlen(rt.keys.inbox) == 1
    assert adapter.health()["bots"][ACCOUNT]["duplicates"] == 1
    assert "getUpdates" not in emu.methods()

    await adapter.close()
    assert emu.webhook is None  # deleteWebhook at stop


async def test_polling_clears_a_leftover_webhook(rt: Runtime, emu: Emulator, make_adapter: MakeAdapter) -> None:
    emu.webhook = {"url": "https://old.example/hook", "secret_token": ""}
    update = emu.push_message(emu.chat(777), "hi")
    await make_adapter()
    await consumed(rt, update)
    assert emu.methods()[:3] == ["getMe", "deleteWebhook", "getUpdates"]


async def test_health_reports_connection_counters_and_errors(
    rt: Runtime, emu: Emulator, make_adapter: MakeAdapter
) -> None:
    update = emu.push_message(emu.chat(777), "hi")
    adapter = await make_adapter()
    await consumed(rt, update)
    health = adapter.health()
    json.dumps(health)  # published as JSON for `switchboard stats`
    bot = health["bots"][ACCOUNT]
    assert health["connected"] is True and health["detail"] == f"@{BOT_USERNAME} polling"
    assert (bot["username"], bot["received"], bot["offset"]) == (BOT_USERNAME, 1, update["update_id"] + 1)

    # The API goes away: the poll loop keeps running, reports it, and recovers.
    emu.fail("getUpdates", 502, "Bad Gateway", times=2)
    await until(lambda: not adapter.health()["connected"], what="disconnected")
    assert "TelegramServerError" in adapter.health()["last_error"]
    await until(lambda: adapter.health()["connected"], what="reconnected")
