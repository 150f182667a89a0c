"""The weekly summary (router/summary.py) over a small fixed event log, each figure checked against
a value worked out by hand; the week arithmetic and the schedule (router/weekly.py due_week); the
``[reports]`` settings refused with their reason.

The log (2026-W45 is Mon 02 - Sun 08 November; W44 is Mon 26 Oct - Sun 01 Nov). ``payments`` keeps
office hours (Mon-Fri 09:00-17:00 UTC), ``security`` is open 24/7.
- p0 security telegram: opened Tue 20 Oct (W43): the store covers W44 whole.
- p1 security telegram, p2 payments email: opened in W44 (Tue 27, Wed 28 Oct).
- c1 security telegram sla: opened Mon 02 10:00, replied by alice 10:10, closed by alice 11:00,
  rated 5 at 12:00.
- c2 security telegram sla: opened Tue 03 09:00, first response breached 09:15, replied by bob 09:30,
  closed 10:00, reopened 11:00, closed by bob 13:00, rated 2 at 14:00.
- c3 payments email sla: opened Fri 06 16:00, replied by carol Mon 09 09:30, moved to security 09:40.
- c4 payments telegram: opened Wed 04 10:00, answered by the knowledge base 10:00:05, closed by it 10:01.
- c5 payments discord sla: opened Thu 05 10:00, answered 10:00:05, reopened 10:02, replied by dave 11:00.
- c6 security telegram: opened Sun 08 23:00 UTC (Mon 09 07:00 in Shanghai).
- n1 security telegram: opened Mon 09 08:00 (W46): in no figure of W45.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from insight.causes import Cause, Causes, Quote
from router.complaints import ComplaintReport
from router.config import ReportSettings
from router.errors import ConfigError
from router.reports import ReportError, Reports
from router.summary import QUOTE_CHARS, Week, WeekCauses, gather, render
from router.weekly import due_week, send_time
from sla.calendar import Calendar
from tests.router.eventlog import Log, write_store

OFFICE = Calendar(ZoneInfo("UTC"), tuple(((9 * 60, 17 * 60),) if d < 5 else () for d in range(7)))
CONVS = {
    "p0": ("telegram", "en", [], None),
    "p1": ("telegram", "en", [], None),
    "p2": ("email", "en", [], None),
    "c1": ("telegram", "en", ["security"], 1),
    "c2": ("telegram", "zh", ["security"], 1),
    "c3": ("email", "en", ["payments"], 1),
    "c4": ("telegram", "ru", [], None),
    "c5": ("discord", "en", ["payments"], 1),
    "c6": ("telegram", "en", [], None),
    "n1": ("telegram", "en", [], None),
}
LOG: Log = [
    ("p0", "security", "created", "-20 10:00", {"prio": 3}),
    ("p1", "security", "created", "-27 10:00", {"prio": 3}),
    ("p2", "payments", "created", "-28 10:00", {"prio": 3}),
    ("c1", "security", "created", "02 10:00", {"prio": 2}),
    ("c1", "security", "replied", "02 10:10", {"by": "alice", "reply": "r1"}),
    ("c1", "security", "closed", "02 11:00", {"by": "alice"}),
    ("c1", "security", "csat", "02 12:00", {"rating": 5, "agent": "alice"}),
    ("c2", "security", "created", "03 09:00", {"prio": 1}),
    ("c2", "security", "sla_breached", "03 09:15", {"target": "first_response"}),
    ("c2", "security", "replied", "03 09:30", {"by": "bob", "reply": "r2"}),
    ("c2", "security", "closed", "03 10:00", {"by": "bob"}),
    ("c2", "security", "reopened", "03 11:00", {"prio": 1}),
    ("c2", "security", "closed", "03 13:00", {"by": "bob"}),
    ("c2", "security", "csat", "03 14:00", {"rating": 2, "agent": "bob"}),
    ("c3", "payments", "created", "06 16:00", {"prio": 3}),
    ("c3", "payments", "replied", "09 09:30", {"by": "carol", "reply": "r3"}),
    ("c3", "payments", "moved", "09 09:40", {"to": "security", "by": "carol"}),
    ("c3", "security", "created", "09 09:40", {"prio": 3, "from": "payments"}),
    ("c4", "payments", "created", "04 10:00", {"prio": 3}),
    ("c4", "payments", "answered", "04 10:00:05", {"article": "fees"}),
    ("c4", "payments", "closed", "04 10:01", {"by": "kb"}),
    ("c5", "payments", "created", "05 10:00", {"prio": 3}),
    ("c5", "payments", "answered", "05 10:00:05", {"article": "deposit"}),
    ("c5", "payments", "reopened", "05 10:02", {"prio": 3}),
    ("c5", "payments", "replied", "05 11:00", {"by": "dave", "reply": "r5"}),
    ("c6", "security", "created", "08 23:00", {"prio": 3}),
    ("n1", "security", "created", "09 08:00", {"prio": 3}),
]
W45 = Week(2026, 45)


def calendar(group: str) -> Calendar:
    return OFFICE if group == "payments" else Calendar.always()


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(write_store(tmp_path / "s.duckdb", LOG, CONVS)), read_only=True)
    yield c
    c.close()


def test_the_figures_of_the_week(con: duckdb.DuckDBPyConnection) -> None:
    f = gather(con, W45, calendar)
    rows = {name: r.rows for name, r in f.reports.items()}
    # Opened in W45: security c1 c2 c6, payments c3 c4 c5 (n1 is W46); in W44: p1, p2.
    assert sum(n for _, _, n in rows["volume_group"]) == 6
    assert {k: n for _, k, n in rows["volume_channel"]} == {"telegram": 4, "email": 1, "discord": 1}
    assert {k: n for _, k, n in rows["volume_group_before"]} == {"security": 1, "payments": 1}
    # security (24/7): c1 600 s, c2 1800 s -> p50 rank 1, p90 rank 2. payments (office hours):
    # c3 Fri 16:00-17:00 + Mon 09:00-09:30 = 5400 s, c5 3600 s -> 3600 / 5400.
    assert rows["first_response"] == [("payments", 2, 3600.0, 5400.0), ("security", 2, 600.0, 1800.0)]
    # Closed now: c4 by kb in payments (60 s of office time); c1 3600 s, c2 09:00-13:00 = 14400 s.
    assert rows["resolution"] == [("payments", 1, 60.0, 60.0), ("security", 2, 3600.0, 14400.0)]
    # Under a policy: c1 c2 (security), c3 c5 (payments); c2 breached its first response.
    assert ("security", "first_response", 2, 1, 0.5) in rows["sla"]
    assert ("payments", "resolution", 2, 0, 1.0) in rows["sla"]
    assert rows["reopens"] == [("payments", 1, 0, 0.0), ("security", 2, 1, 0.5)]
    # Ratings 5 (c1) and 2 (c2): average 3.5, one of two 4 or 5.
    assert rows["csat"] == [("security", 2, 3.5, 0.5)]
    assert rows["answers"] == [("payments", "reopened", 1), ("payments", "solved", 1)]
    assert rows["transfers"] == [("payments", "security", 1)]
    assert f.business_hours
    assert f.oldest == datetime(2026, 10, 20, 10, tzinfo=UTC)
    assert f.newest == datetime(2026, 11, 9, 9, 40, tzinfo=UTC)


def test_the_summary_text_and_html(con: duckdb.DuckDBPyConnection) -> None:
    s = render(gather(con, W45, calendar))
    assert s.subject == "Support weekly summary 2026-W45"
    lines = s.text.splitlines()
    assert lines[1] == (
        "Mon 02 Nov - Sun 08 Nov 2026 (UTC). Conversations opened in the week, with what happened to them"
        " up to Mon 09 Nov 2026 09:40."
    )
    for expected in (
        "6 conversations (week before 2, +200%)",
        "  by group: payments 3 (+200%), security 3 (+200%)",
        "  by channel: telegram 4 (+300%), discord 1 (week before 0), email 1 (+0%)",
        "First response p50 / p90 (business hours where the group's SLA calendar keeps them)",
        "  payments: 1h00m / 1h30m (2 conversations)",
        "  security: 10m00s / 30m00s (2 conversations)",
        "  payments: 1m00s / 1m00s (1 conversations)",
        "  security first_response: 50.0% (1 of 2 breached)",
        "  33.3% (1 of 3 closed were reopened)",
        "  average 3.50 of 5 over 2 ratings",
        "  2 answered: solved 1, closed 0, reopened 1, open 0",
        "  payments -> security: 1",
    ):
        assert expected in lines, expected
    assert "<td>channel discord</td><td>1</td><td>0</td><td>week before 0, change not a percentage</td>" in s.html
    assert "<td>channel telegram</td><td>4</td><td>1</td><td>week before 1, +300%</td>" in s.html
    assert "<h3>CSAT</h3>\n<p>average 3.50 of 5 over 2 ratings</p>" in s.html


LONG = "my withdrawal of 2 BTC is stuck since monday <b>nobody</b> answers " * 5


def cause(name: str, size: int, previous: int, spike: bool, quote: str) -> Cause:
    return Cause(name, size, previous, spike, {"en": tuple(name.split())}, (), (Quote("c1", "en", quote),), ("c1",))


# W45's complaints: the withdrawals spiked (3 -> 14); 6 causes, of which the summary lists 5.
REPORT = ComplaintReport(
    int(W45.start.timestamp() * 1000),
    int(W45.end.timestamp() * 1000),
    7.0,
    0.5,
    Causes(
        (
            cause("withdrawal stuck pending", 14, 3, True, LONG),
            cause("p2p seller scam", 10, 10, False, "the seller took my money\n and left"),
            cause("fees high", 8, 9, False, "why are the fees so high"),
            cause("account frozen", 6, 6, False, "my account is frozen"),
            cause("liquidation", 4, 0, False, "I was liquidated during the outage"),
            cause("app crash", 2, 1, False, "the app crashes"),
        ),
        complaints=44,
        previous=31,
        unmatched=2,
    ),
)


def section(text: str) -> list[str]:
    lines = [*text.splitlines(), ""]  # the last section ends the text
    start = lines.index("What users complained about")
    return lines[start + 1 : lines.index("", start)]


def test_the_complaint_causes_section(con: duckdb.DuckDBPyConnection) -> None:
    s = render(gather(con, W45, calendar), WeekCauses(REPORT, top=5))
    cut = " ".join(LONG.split())[: QUOTE_CHARS - 1].rstrip() + "\u2026"
    assert len(cut) == QUOTE_CHARS
    assert section(s.text) == [
        "  44 complaints (31 the week before); the 5 largest causes",
        "  withdrawal stuck pending: 14 (week before 3, +11)  SPIKE",
        f'    "{cut}"',
        "  p2p seller scam: 10 (week before 10, +0)",
        '    "the seller took my money and left"',  # one line, as written otherwise
        "  fees high: 8 (week before 9, -1)",
        '    "why are the fees so high"',
        "  account frozen: 6 (week before 6, +0)",
        '    "my account is frozen"',
        "  liquidation: 4 (week before 0, +4)",
        '    "I was liquidated during the outage"',
        "  1 smaller causes: 2 complaints",
    ]
    assert "<h3>What users complained about</h3>\n<p>44 complaints (31 the week before)" in s.html
    # The user's words are escaped, never markup in the lead's mail.
    assert "<td>withdrawal stuck pending (spike)</td><td>14</td><td>3</td><td>+11</td>" in s.html
    assert "&lt;b&gt;nobody&lt;/b&gt;" in s.html and "<b>nobody</b>" not in s.html
    assert "app crash" not in s.html


def test_complaint_causes_that_cannot_be_read_are_said_missing(con: duckdb.DuckDBPyConnection) -> None:
    f = gather(con, W45, calendar)
    gone = WeekCauses(None, "Redis keeps a closed conversation 30 days")
    assert section(render(f, gone).text) == ["  missing: Redis keeps a closed conversation 30 days"]
    # The week before unknown: sizes, but no change and no spike (it could be the lost history).
    half = render(f, WeekCauses(REPORT, before_missing="the week before began before that", top=1)).text
    assert section(half) == [
        "  44 complaints (the week before unknown); the 1 largest causes",
        "  change missing: the week before began before that",
        "  withdrawal stuck pending: 14",
        f'    "{" ".join(LONG.split())[: QUOTE_CHARS - 1].rstrip()}\u2026"',
        "  5 smaller causes: 30 complaints",
    ]
    none = ComplaintReport(REPORT.start_ms, REPORT.end_ms, 7.0, 0.5, Causes((), 0, 4, 4))
    assert section(render(f, WeekCauses(none)).text) == ["  no complaint in the week (4 the week before)"]
    # Without causes (not read at all) the section is left out, not said empty.
    assert "What users complained about" not in render(f).text


def test_a_week_in_another_time_zone(con: duckdb.DuckDBPyConnection) -> None:
    # Shanghai's W45 is Sun 01 Nov 16:00 to Sun 08 Nov 16:00 UTC: c6 (Sun 08 23:00 UTC) is out.
    f = gather(con, Week(2026, 45, "Asia/Shanghai"), calendar)
    assert sum(n for _, _, n in f.reports["volume_group"].rows) == 5
    assert "(Asia/Shanghai)" in render(f).text.splitlines()[1]


def test_what_cannot_be_computed_is_said_missing(tmp_path: Path) -> None:
    # A store that begins mid-week with one unanswered conversation and nothing else.
    log: Log = [("c6", "security", "created", "08 23:00", {"prio": 3})]
    with duckdb.connect(str(write_store(tmp_path / "m.duckdb", log, CONVS)), read_only=True) as c:
        text = render(gather(c, W45)).text
    for expected in (
        "The store's oldest event is Sun 08 Nov 2026 23:00, after the week began: figures are partial.",
        "1 conversations (change missing: the store has no events from the week before)",
        "  missing: no conversation opened in the week was replied",
        "  missing: no conversation opened in the week was closed (and not reopened since)",
        "  missing: no conversation opened in the week ran under an SLA policy",
        "  missing: no conversation opened in the week was closed",
        "  missing: no rating for a conversation opened in the week",
        "  none: the knowledge base answered no conversation opened in the week",
    ):
        assert expected in text.splitlines(), expected
    assert "  by group: security 1" in text.splitlines()  # no change where the week before is unknown
    assert "wall-clock time" not in text  # no duration figure at all, so no clock named


def test_an_empty_store(tmp_path: Path) -> None:
    with duckdb.connect(str(write_store(tmp_path / "e.duckdb", [], CONVS)), read_only=True) as c:
        text = render(gather(c, W45)).text
    assert "The analytics store holds no conversation event: every figure below is missing." in text


def test_the_csat_report_filters_by_opening(con: duckdb.DuckDBPyConnection) -> None:
    reports = Reports(con)
    assert reports.run("csat").rows == [("security", 2, 3.5, 0.5)]
    assert reports.run("csat", Week(2026, 44).filters()).rows == []


def test_weeks() -> None:
    assert Week.parse("2026-w45") == W45
    assert (W45.start, W45.end) == (datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC))
    assert W45.shift(-1).label == "2026-W44"
    assert Week(2026, 1).shift(-1).label == "2025-W52"
    assert Week.of(datetime(2026, 11, 8, 23, tzinfo=UTC), "Asia/Shanghai").label == "2026-W46"
    for bad in ("2026-45", "2026-W54", "W45", "2025-W53"):
        with pytest.raises(ReportError, match="an ISO week such as 2026-W45"):
            Week.parse(bad)


def test_the_week_due() -> None:
    monday9 = ReportSettings(weekday="monday", hour=9)
    assert send_time(W45, monday9) == datetime(2026, 11, 9, 9, tzinfo=UTC)
    assert due_week(datetime(2026, 11, 9, 8, 59, tzinfo=UTC), monday9).label == "2026-W44"
    assert due_week(datetime(2026, 11, 9, 9, 0, tzinfo=UTC), monday9).label == "2026-W45"
    assert due_week(datetime(2026, 11, 15, 23, 0, tzinfo=UTC), monday9).label == "2026-W45"
    friday = ReportSettings(weekday="friday", hour=17, timezone="Asia/Shanghai")
    # W45's summary goes on Fri 13 Nov 17:00 in Shanghai = 09:00 UTC.
    assert send_time(Week(2026, 45, "Asia/Shanghai"), friday) == datetime(2026, 11, 13, 9, tzinfo=UTC)
    assert due_week(datetime(2026, 11, 13, 8, 59, tzinfo=UTC), friday).label == "2026-W44"
    assert due_week(datetime(2026, 11, 13, 9, 0, tzinfo=UTC), friday).label == "2026-W45"


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"hour": 24}, "reports.hour"),
        ({"weekday": "funday"}, "reports.weekday"),
        ({"email_to": ["lead"], "email_mailbox": "support"}, "not an e-mail address: 'lead'"),
        ({"email_to": ["lead@example.com"]}, "email_to needs email_mailbox"),
        ({"telegram_chat": -100123}, "telegram_chat needs telegram_bot"),
        ({"weekly": True}, "weekly = true needs a recipient"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(section: dict[str, object], reason: str) -> None:
    from router.config import load_settings

    with pytest.raises(ConfigError, match="reports") as info:
        load_settings(None, reports=section)
    assert reason in str(info.value)
