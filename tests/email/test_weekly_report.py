"""The weekly summary by e-mail (router/weekly.py, adapters/email/report.py) through a real SMTP
server (aiosmtpd): two services racing send it once; a send that failed is not marked and goes at
the next tick; `switchboard report weekly` prints it and `--send` sends what is not sent yet; the
complaints routed in the week are its causes, quoted as written."""

from __future__ import annotations

import asyncio
import email
import email.policy
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from adapters.email.report import ReportMail, report_mail
from router.config import ReportSettings
from router.errors import ConfigError
from router.runtime import Runtime
from router.summary import Week
from router.weekly import WeeklyReports, store_reader, week_causes
from tests.conftest import SWITCHBOARD, free_port
from tests.email.conftest import SMTP_PASSWORD, SMTP_USER, SmtpRecorder, SmtpServer, _authenticator
from tests.router.eventlog import write_store
from tests.router.test_complaints import DEFAULT_RULES, SHIPPED, Clock, route
from tests.router.test_summary import CONVS, LOG

LEAD = "lead@exchange.test"
# Mon 09 Nov 2026 09:00 UTC: the send time of W45's summary (Monday, 09:00, UTC).
SEND_MS = int(datetime(2026, 11, 9, 9, tzinfo=UTC).timestamp() * 1000)
SETTINGS = ReportSettings(weekly=True, email_to=[LEAD, "cto@exchange.test"], email_mailbox="support")


@dataclass
class FakeClock:
    now: int

    def now_ms(self) -> int:
        return self.now


def section(port: int) -> dict[str, Any]:
    box = {
        "name": "support",
        "address": "support@exchange.test",
        "display_name": "Exchange Support",
        "password": "unused",
        "imap_host": "127.0.0.1",
        "imap_tls": "none",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "smtp_user": SMTP_USER,
        "smtp_password": SMTP_PASSWORD,
        "timeout_s": 5,
    }
    return {"mailboxes": [box]}


def recipient(port: int) -> ReportMail:
    return report_mail(section(port), "support", SETTINGS.email_to)


@pytest.fixture
def store(rt: Runtime) -> Path:
    return write_store(rt.settings.analytics.path(rt.settings.redis.data_dir), LOG, CONVS)


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.cluster
async def test_two_services_racing_send_it_once(rt: Runtime, smtp_server: SmtpServer, store: Path) -> None:
    clock = FakeClock(SEND_MS - 60_000)
    a, b = (
        WeeklyReports(rt, [recipient(smtp_server.port)], store_reader(store), settings=SETTINGS, clock=clock, owner=o)
        for o in ("a", "b")
    )
    # A minute before the send time the due week is W44, which both send once; then W45.
    first = await asyncio.gather(a.tick(), b.tick())
    assert sorted(r["email"] for r in first) == ["sent", "taken"]
    clock.now = SEND_MS
    second = await asyncio.gather(a.tick(), b.tick())
    assert sorted(r["email"] for r in second) == ["sent", "taken"]
    assert await asyncio.gather(a.tick(), b.tick()) == [{}, {}]  # marked: nobody sends it again
    got = smtp_server.recorder.messages
    assert [parsed(m.content)["Subject"] for m in got] == [
        "Support weekly summary 2026-W44",
        "Support weekly summary 2026-W45",
    ]
    assert got[1].rcpt_tos == [LEAD, "cto@exchange.test"] and got[1].login == SMTP_USER
    msg = parsed(got[1].content)
    assert msg["From"] == "Exchange Support <support@exchange.test>"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert "6 conversations (week before 2, +200%)" in text.get_content()
    assert "<h3>CSAT</h3>\r\n<p>average 3.50 of 5 over 2 ratings</p>" in html.get_content()
    mark = await rt.client.get(rt.keys.weekly_report("2026-W45", "email"))
    assert mark is not None and mark.decode().startswith("sent ")


async def test_a_summary_sent_again_after_a_crash_has_the_same_message_id(
    rt: Runtime, smtp_server: SmtpServer, store: Path
) -> None:
    """At least once: a replica that sent and died before its mark (its claim then expires) leaves
    the week to another, which sends it again; the second copy is the same message to the mail
    clients that drop duplicates by Message-ID. Another week is another message."""
    clock = FakeClock(SEND_MS)
    a, b = (
        WeeklyReports(rt, [recipient(smtp_server.port)], store_reader(store), settings=SETTINGS, clock=clock, owner=o)
        for o in ("a", "b")
    )
    assert await a.tick() == {"email": "sent"}
    await rt.client.delete(rt.keys.weekly_report("2026-W45", "email"))  # a's crash: never marked
    assert await b.tick() == {"email": "sent"}
    clock.now = SEND_MS + 7 * 86_400_000  # the next week's
    assert await b.tick() == {"email": "sent"}
    first, again, later = (parsed(m.content) for m in smtp_server.recorder.messages)
    assert first["Subject"] == again["Subject"] != later["Subject"]
    assert first["Message-ID"] == again["Message-ID"] != later["Message-ID"]
    assert str(first["Message-ID"]).endswith("@exchange.test>")


@pytest.mark.cluster
async def test_a_failed_send_is_not_marked_and_goes_at_the_next_tick(rt: Runtime, store: Path) -> None:
    port = free_port()  # no SMTP server there yet
    weekly = WeeklyReports(rt, [recipient(port)], store_reader(store), settings=SETTINGS, clock=FakeClock(SEND_MS))
    [outcome] = (await weekly.tick()).values()
    assert outcome.startswith("failed: 127.0.0.1: ")
    assert weekly.health()["detail"].startswith("email: failed")
    assert await rt.client.get(rt.keys.weekly_report("2026-W45", "email")) is None
    recorder = SmtpRecorder()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=port, authenticator=_authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        assert await weekly.tick() == {"email": "sent"}
    finally:
        controller.stop()
    assert len(recorder.messages) == 1
    assert weekly.health()["connected"]


@pytest.mark.cluster
@pytest.mark.parametrize("rules_file", [DEFAULT_RULES])  # the shipped rules tag the complaints
async def test_the_weeks_complaint_causes_in_the_mail(rt: Runtime, smtp_server: SmtpServer, store: Path) -> None:
    day = 86_400_000
    clock = Clock(SEND_MS - 10 * day)  # Fri 30 Oct: W44
    await route(rt, clock, [SHIPPED[0]])
    clock.ms = SEND_MS - 5 * day  # Wed 04 Nov: W45
    await route(rt, clock, [*SHIPPED, "how do I enable 2FA on my account?"])  # the last is no complaint
    weekly = WeeklyReports(
        rt, [recipient(smtp_server.port)], store_reader(store), settings=SETTINGS, clock=FakeClock(SEND_MS)
    )
    assert await weekly.tick() == {"email": "sent"}
    [got] = smtp_server.recorder.messages
    text, html = (parsed(got.content).get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    lines = text.get_content().splitlines()  # the last section: to the end
    part = lines[lines.index("What users complained about") + 1 :]
    assert part[0].startswith("  3 complaints (1 the week before); the ")
    # Every complaint of the week is in a cause, each cause quoting one as the user wrote it.
    assert sum(int(line.split(": ")[1].split(" ")[0]) for line in part[1:] if not line.startswith("    ")) == 3
    quoted = [line.strip().strip('"') for line in part if line.startswith('    "')]
    assert quoted and set(quoted) <= set(SHIPPED)
    assert f"<td>{quoted[0]}</td>" in html.get_content()
    # A week Redis no longer holds whole (closed conversations kept 30 days) is said missing.
    later = datetime.fromtimestamp(SEND_MS / 1000, UTC) + timedelta(days=35)
    gone = await week_causes(rt, Week(2026, 45), later, 5)
    assert gone.report is None and "retention.closed_conversation_days" in gone.missing
    # 25 days after W45 began: W45 is whole in Redis, the week before may not be.
    half = await week_causes(rt, Week(2026, 45), Week(2026, 45).start + timedelta(days=25), 5)
    assert half.report is not None and half.report.found.complaints == 3
    assert "the week before began before that" in half.before_missing


async def test_a_refused_recipient_is_a_failure_not_a_send(rt: Runtime, smtp_server: SmtpServer, store: Path) -> None:
    bad = report_mail(section(smtp_server.port), "support", ["perm@exchange.test"])
    weekly = WeeklyReports(rt, [bad], store_reader(store), settings=SETTINGS, clock=FakeClock(SEND_MS))
    [outcome] = (await weekly.tick()).values()
    assert "550" in outcome and "perm@exchange.test" in outcome
    assert await rt.client.exists(rt.keys.weekly_report("2026-W45", "email")) == 0


def test_a_mailbox_that_cannot_send_is_refused() -> None:
    with pytest.raises(ConfigError, match="no such \\[email\\] mailbox \\(support\\)"):
        report_mail(section(25), "billing", [LEAD])
    no_smtp = {"mailboxes": [{**section(25)["mailboxes"][0], "smtp_host": ""}]}
    with pytest.raises(ConfigError, match="has no smtp_host"):
        report_mail(no_smtp, "support", [LEAD])


async def test_the_command_prints_and_sends(
    rt: Runtime, smtp_server: SmtpServer, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f"""
[redis]
data_dir = "{rt.settings.redis.data_dir}"
[reports]
email_to = ["{LEAD}"]
email_mailbox = "support"
[[email.mailboxes]]
name = "support"
address = "support@exchange.test"
password_env = "REPORT_MAIL_PASSWORD"
imap_host = "127.0.0.1"
imap_tls = "none"
smtp_host = "127.0.0.1"
smtp_port = {smtp_server.port}
smtp_tls = "none"
smtp_user = "{SMTP_USER}"
smtp_password_env = "REPORT_SMTP_PASSWORD"
"""
    )
    env = {**env, "REPORT_MAIL_PASSWORD": "unused", "REPORT_SMTP_PASSWORD": SMTP_PASSWORD}

    def switchboard(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*SWITCHBOARD, "--config", str(config), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    shown = await asyncio.to_thread(switchboard, "report", "weekly", "--week", "2026-W45")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Support weekly summary 2026-W45\n")
    assert "  average 3.50 of 5 over 2 ratings\n" in shown.stdout
    assert smtp_server.recorder.messages == []
    sent = await asyncio.to_thread(switchboard, "report", "weekly", "--week", "2026-W45", "--send")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == f"2026-W45 to {LEAD} (mailbox support): sent\n"
    again = await asyncio.to_thread(switchboard, "report", "weekly", "--week", "2026-W45", "--send")
    assert again.stdout == f"2026-W45 to {LEAD} (mailbox support): already sent\n"
    assert len(smtp_server.recorder.messages) == 1
    bad = await asyncio.to_thread(switchboard, "report", "weekly", "--week", "2026-W99")
    assert bad.returncode != 0 and "an ISO week such as 2026-W45" in bad.stderr
    other = await asyncio.to_thread(switchboard, "report", "volume", "--send")
    assert other.returncode != 0 and "--week and --send are for report weekly" in other.stderr
