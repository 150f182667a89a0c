"""The weekly summary in a Telegram chat (router/weekly.py, adapters/telegram/report.py), sent by
the real aiogram client to the Bot API emulator: a send the server refused is not marked and goes
at the next tick, once; a bot that is not configured is refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from adapters.telegram.report import report_chat
from router.config import ReportSettings
from router.errors import ConfigError
from router.runtime import Runtime
from router.weekly import WeeklyReports, store_reader
from tests.router.eventlog import write_store
from tests.router.test_summary import CONVS, LOG
from tests.telegram.conftest import ACCOUNT, section
from tests.telegram.emulator import Emulator

LEADS = -100777
SEND_MS = int(datetime(2026, 11, 9, 9, tzinfo=UTC).timestamp() * 1000)
SETTINGS = ReportSettings(weekly=True, telegram_chat=LEADS, telegram_bot=ACCOUNT)


@dataclass
class FakeClock:
    now: int

    def now_ms(self) -> int:
        return self.now


async def test_a_refused_send_is_retried_at_the_next_tick_and_sent_once(rt: Runtime, emu: Emulator) -> None:
    store = write_store(rt.settings.analytics.path(rt.settings.redis.data_dir), LOG, CONVS)
    chat = report_chat(section(emu), ACCOUNT, LEADS)
    weekly = WeeklyReports(rt, [chat], store_reader(store), settings=SETTINGS, clock=FakeClock(SEND_MS))
    emu.fail("sendMessage", 502, "Bad Gateway")
    [outcome] = (await weekly.tick()).values()
    assert outcome.startswith("failed: ") and "Bad Gateway" in outcome
    assert await rt.client.exists(rt.keys.weekly_report("2026-W45", "telegram")) == 0
    assert emu.sent == []
    assert await weekly.tick() == {"telegram": "sent"}
    assert await weekly.tick() == {}
    [sent] = emu.sent
    assert sent["chat_id"] == LEADS and sent["parse_mode"] is None
    assert sent["text"].startswith("Support weekly summary 2026-W45\n")
    assert "  average 3.50 of 5 over 2 ratings\n" in sent["text"]
    assert weekly.sent == {"telegram": "2026-W45"}


def test_a_bot_that_is_not_configured_is_refused(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="telegram_bot 'otherbot': no such \\[telegram\\] bot \\(supportbot\\)"):
        report_chat(section(emu), "otherbot", LEADS)
    with pytest.raises(ConfigError, match="none configured"):
        report_chat({}, ACCOUNT, LEADS)
