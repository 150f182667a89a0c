"""Report figures (router/reports.py) over a small fixed event log, each checked against a value
computed by hand (the arithmetic is in the comments).

The log, written through the exporter's own ``Store.commit``. ``payments`` keeps office hours
(Mon-Fri 09:00-17:00 UTC), ``security`` is open 24/7. 2026-11-02 is a Monday.
- c1 security telegram en [security] sla: opened Mon 02 10:00, claimed and replied by alice 10:05,
  closed by alice 11:00.
- c2 security discord zh [security, vip] sla: opened Mon 02 12:00, first-response SLA breached 12:15,
  replied by bob 12:20, closed by bob 13:00, reopened 14:00, closed by bob 15:00.
- c3 payments email en [payments] sla: opened Fri 06 16:30, replied by carol Mon 09 09:30,
  moved to security by carol 09:40, closed by alice 10:00.
- c4 payments telegram ru [] no sla: opened Tue 03 08:00, answered by the knowledge base 08:00:05,
  closed by it (kb) 08:01.
- c5 payments telegram en [payments] sla: opened Tue 03 10:00, answered 10:00:05, reopened 10:02,
  replied by dave 11:00; still open.
- c6 security telegram en [security] sla: opened Tue 10 10:00; nothing since.
- a button press (no conversation): ignored by every report.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from router.reports import Filters, ReportError, Reports
from sla.calendar import Calendar
from tests.conftest import SWITCHBOARD
from tests.router.eventlog import ms, write_store

OFFICE = Calendar(ZoneInfo("UTC"), tuple(((9 * 60, 17 * 60),) if d < 5 else () for d in range(7)))
CONVS = {
    "c1": ("telegram", "en", ["security"], 1),
    "c2": ("discord", "zh", ["security", "vip"], 1),
    "c3": ("email", "en", ["payments"], 1),
    "c4": ("telegram", "ru", [], None),
    "c5": ("telegram", "en", ["payments"], 1),
    "c6": ("telegram", "en", ["security"], 1),
}
# (conv, group, type, when "DD HH:MM[:SS]" in November 2026, data)
LOG: list[tuple[str, str, str, str, dict[str, object]]] = [
    ("c1", "security", "created", "02 10:00", {"prio": 2}),
    ("c1", "security", "claimed", "02 10:01", {"agent": "alice"}),
    ("c1", "security", "replied", "02 10:05", {"by": "alice", "reply": "r1"}),
    ("c1", "security", "closed", "02 11:00", {"by": "alice"}),
    ("c2", "security", "created", "02 12:00", {"prio": 1}),
    ("c2", "security", "sla_breached", "02 12:15", {"target": "first_response"}),
    ("c2", "security", "replied", "02 12:20", {"by": "bob", "reply": "r2"}),
    ("c2", "security", "closed", "02 13:00", {"by": "bob"}),
    ("c2", "security", "reopened", "02 14:00", {"prio": 1}),
    ("c2", "security", "closed", "02 15:00", {"by": "bob"}),
    ("c3", "payments", "created", "06 16:30", {"prio": 3}),
    ("c3", "payments", "replied", "09 09:30", {"by": "carol", "reply": "r3"}),
    ("c3", "payments", "moved", "09 09:40", {"to": "security", "by": "carol"}),
    ("c3", "security", "created", "09 09:40", {"prio": 3, "from": "payments"}),
    ("c3", "security", "closed", "09 10:00", {"by": "alice"}),
    ("c4", "payments", "created", "03 08:00", {"prio": 3}),
    ("c4", "payments", "answered", "03 08:00:05", {"article": "fees"}),
    ("c4", "payments", "closed", "03 08:01", {"by": "kb"}),
    ("c5", "payments", "created", "03 10:00", {"prio": 3}),
    ("c5", "payments", "answered", "03 10:00:05", {"article": "deposit"}),
    ("c5", "payments", "reopened", "03 10:02", {"prio": 3}),
    ("c5", "payments", "replied", "03 11:00", {"by": "dave", "reply": "r5"}),
    ("c6", "security", "created", "10 10:00", {"prio": 2}),
]


def _day(d: int) -> datetime:
    return datetime(2026, 11, d)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    press = {"channel": "telegram", "data": "kb:yes"}
    row = ("actions@0/1-0", "actions", 0, None, "press", ms("03 10:01"), None, "telegram", None, None, None,
           json.dumps(press), None, None)  # fmt: skip
    return write_store(tmp_path / "r.duckdb", LOG, CONVS, [row])


@pytest.fixture
def reports(store_path: Path) -> Iterator[Reports]:
    con = duckdb.connect(str(store_path), read_only=True)
    yield Reports(con, lambda group: OFFICE if group == "payments" else Calendar.always())
    con.close()


def test_volume_by_group_per_day(reports: Reports) -> None:
    r = reports.volume(by="group", bucket="day")
    assert r.columns == ("period", "group", "conversations")
    assert r.rows == [
        (_day(2), "security", 2),
        (_day(3), "payments", 2),
        (_day(6), "payments", 1),
        (_day(10), "security", 1),
    ]
    assert r.convs == [["c1", "c2"], ["c4", "c5"], ["c3"], ["c6"]]


def test_volume_by_tag_per_week_counts_each_tag_and_the_untagged(reports: Reports) -> None:
    r = reports.volume(by="tag", bucket="week")
    # Week of Mon 02: payments c3 c5, security c1 c2, vip c2, untagged c4; week of Mon 09: c6.
    assert r.rows == [
        (_day(2), "payments", 2),
        (_day(2), "security", 2),
        (_day(2), "vip", 1),
        (_day(2), None, 1),
        (_day(9), "security", 1),
    ]
    assert r.convs[3] == ["c4"]


def test_volume_by_language_and_channel_with_filters(reports: Reports) -> None:
    week = Filters(start=datetime(2026, 11, 2, tzinfo=UTC), end=datetime(2026, 11, 9, tzinfo=UTC))
    assert reports.volume(week, by="language", bucket="month").rows == [
        (_day(1), "en", 3),  # c1 c3 c5 (c6 opened after the period)
        (_day(1), "ru", 1),
        (_day(1), "zh", 1),
    ]
    assert reports.volume(Filters(tag="vip"), by="channel").rows == [(_day(2), "discord", 1)]


def test_first_response_in_business_hours_by_group(reports: Reports) -> None:
    r = reports.first_response(by="group")
    # payments: c3 Fri 16:30 -> Mon 09:30 is 30 min on Friday + 30 min on Monday = 3600 s of office
    # hours (234,000 s of wall time); c5 10:00 -> 11:00 = 3600. security (24/7): c1 300, c2 1200:
    # p50 is rank ceil(0.5 * 2) = 1 -> 300, p90 rank ceil(1.8) = 2 -> 1200.
    assert r.rows == [("payments", 2, 3600.0, 3600.0), ("security", 2, 300.0, 1200.0)]
    assert r.convs == [["c3", "c5"], ["c1", "c2"]]


def test_first_response_by_agent_with_filters(reports: Reports) -> None:
    assert reports.first_response(by="agent").rows == [
        ("alice", 1, 300.0, 300.0),
        ("bob", 1, 1200.0, 1200.0),
        ("carol", 1, 3600.0, 3600.0),
        ("dave", 1, 3600.0, 3600.0),
    ]
    # telegram + en: c1 c5 c6 (c6 unanswered).
    assert reports.first_response(Filters(channel="telegram", language="en"), by="agent").rows == [
        ("alice", 1, 300.0, 300.0),
        ("dave", 1, 3600.0, 3600.0),
    ]
    # In security at some point: c1 c2 c3 c6; c3 was answered in payments.
    assert reports.first_response(Filters(group="security")).rows == [
        ("payments", 1, 3600.0, 3600.0),
        ("security", 2, 300.0, 1200.0),
    ]


def test_resolution_to_the_last_close(reports: Reports) -> None:
    r = reports.resolution(by="group")
    # payments: c4 08:00 -> 08:01 before opening time = 0 s of office hours. security: c1 3600,
    # c2 12:00 -> 15:00 (last close, after the reopen) 10800, c3 Fri 16:30 -> Mon 10:00 closed in
    # security (24/7) = 7.5 h + 48 h + 10 h = 235800; p50 rank 2 -> 10800, p90 rank ceil(2.7) = 3.
    # c5 is open.
    assert r.rows == [("payments", 1, 0.0, 0.0), ("security", 3, 10800.0, 235800.0)]
    assert reports.resolution(by="agent").rows == [
        ("alice", 2, 3600.0, 235800.0),
        ("bob", 1, 10800.0, 10800.0),
        ("kb", 1, 0.0, 0.0),
    ]


def test_sla_attainment(reports: Reports) -> None:
    r = reports.sla()
    # Under a policy: payments c3 c5 (by opening group), security c1 c2 c6; c4 has none. c2 breached
    # its first response: 1 - 1/3 = 0.6667.
    assert r.rows == [
        ("payments", "first_response", 2, 0, 1.0),
        ("payments", "next_response", 2, 0, 1.0),
        ("payments", "resolution", 2, 0, 1.0),
        ("security", "first_response", 3, 1, 0.6667),
        ("security", "next_response", 3, 0, 1.0),
        ("security", "resolution", 3, 0, 1.0),
    ]
    assert r.convs[3] == ["c2"] and r.convs[0] == []


def test_reopen_rate(reports: Reports) -> None:
    r = reports.reopens()
    # Closed at least once: payments c3 c4, security c1 c2; reopened: c2 (c5 reopened but never closed).
    assert r.rows == [("payments", 2, 0, 0.0), ("security", 2, 1, 0.5)]
    assert r.convs == [[], ["c2"]]


def test_auto_answer_outcomes(reports: Reports) -> None:
    r = reports.answers()
    assert r.rows == [("payments", "reopened", 1), ("payments", "solved", 1)]
    assert r.convs == [["c5"], ["c4"]]


def test_transfers_between_groups(reports: Reports) -> None:
    assert reports.transfers().rows == [("payments", "security", 1)]
    assert reports.transfers(Filters(agent="carol")).convs == [["c3"]]
    assert reports.transfers(Filters(agent="bob")).rows == []


# Ratings (csat.lua's event: the rated agent, "" when nobody was, e.g. the knowledge base closed it).
CSAT = [
    ("c1", "security", "csat", "02 12:00", {"rating": 5, "agent": "alice"}),
    ("c2", "security", "csat", "02 16:00", {"rating": 2, "agent": "bob"}),
    ("c3", "security", "csat", "09 11:00", {"rating": 4, "agent": "alice"}),
    ("c4", "payments", "csat", "03 09:00", {"rating": 3, "agent": ""}),
    # The follow-up's answers to the ratings of 3 and under (lua/route.lua): the same surveys'
    # comments, not ratings again.
    ("c2", "security", "csat", "02 16:05", {"rating": 2, "comment": True}),
    ("c4", "payments", "csat", "03 09:10", {"rating": 3, "comment": True}),
]


def test_csat_by_group_agent_language_and_tag(tmp_path: Path) -> None:
    with duckdb.connect(str(write_store(tmp_path / "csat.duckdb", LOG + CSAT, CONVS)), read_only=True) as con:
        reports = Reports(con)
        # Opening group: payments c3 4, c4 3 (avg 3.5, one of two >= 4); security c1 5, c2 2.
        assert reports.csat().rows == [("payments", 2, 3.5, 0.5), ("security", 2, 3.5, 0.5)]
        assert reports.csat().columns == ("group", "ratings", "average", "satisfied")
        # Rated agent: alice c1 5 + c3 4; bob c2 2; nobody c4 3.
        r = reports.csat(by="agent")
        assert r.rows == [("alice", 2, 4.5, 1.0), ("bob", 1, 2.0, 0.0), (None, 1, 3.0, 0.0)]
        assert r.convs == [["c1", "c3"], ["c2"], ["c4"]]
        assert reports.csat(by="language").rows == [("en", 2, 4.5, 1.0), ("ru", 1, 3.0, 0.0), ("zh", 1, 2.0, 0.0)]
        # Each tag of a conversation: payments c3; security c1 c2; vip c2; untagged c4.
        r = reports.run("csat", Filters(), by="tag")
        assert r.rows == [
            ("payments", 1, 4.0, 1.0),
            ("security", 2, 3.5, 0.5),
            ("vip", 1, 2.0, 0.0),
            (None, 1, 3.0, 0.0),
        ]
        assert r.convs[1] == ["c1", "c2"]
        assert reports.csat(Filters(language="en"), by="tag").rows == [
            ("payments", 1, 4.0, 1.0),
            ("security", 1, 5.0, 1.0),
        ]
        with pytest.raises(ReportError, match="csat by 'channel'"):
            reports.csat(by="channel")


def test_csv_and_parquet_export_with_drill_down(reports: Reports, tmp_path: Path) -> None:
    report = reports.first_response(by="group")
    reports.export(report, tmp_path / "fr.csv", "csv", drill=True)
    reports.export(report, tmp_path / "fr.parquet", "parquet")
    con = duckdb.connect()
    csv = con.execute(f"SELECT * FROM read_csv('{tmp_path / 'fr.csv'}')").fetchall()
    assert [tuple(row[:4]) for row in csv] == report.rows
    assert [row[4] for row in csv] == ["[c3, c5]", "[c1, c2]"]
    assert con.execute(f"SELECT * FROM read_parquet('{tmp_path / 'fr.parquet'}')").fetchall() == report.rows
    empty = reports.transfers(Filters(agent="nobody"))
    reports.export(empty, tmp_path / "none.csv", "csv")
    assert (tmp_path / "none.csv").read_text().splitlines() == ["from,to,transfers"]


def test_bad_names_and_options_are_clear_errors(reports: Reports, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="unknown report 'nonsense'"):
        reports.run("nonsense")
    with pytest.raises(ReportError, match="volume by 'agent'"):
        reports.run("volume", by="agent")
    with pytest.raises(ReportError, match="bucket 'year'"):
        reports.run("volume", bucket="year")
    with pytest.raises(ReportError, match="report sla"):
        reports.run("sla", by="group")
    with pytest.raises(ReportError, match="format 'xlsx'"):
        reports.export(reports.sla(), tmp_path / "x", "xlsx")


def test_report_command(store_path: Path, env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "SWITCHBOARD_ANALYTICS__DB": str(store_path)}

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SWITCHBOARD, "report", *args], env=env, capture_output=True, text=True, timeout=60)

    # No SLA policy published: every group 24/7, so c3's first response is its wall time, 65 h.
    done = report("first-response", "--group", "payments", "--from", "2026-11-01", "--json", "--drill")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"group": "payments", "conversations": 2, "p50_s": 3600.0, "p90_s": 234000.0, "conv_ids": ["c3", "c5"]}
    ]
    done = report("transfers", "--csv", str(tmp_path / "t.csv"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.csv").read_text().splitlines() == ["from,to,transfers", "payments,security,1"]
    done = report("volume", "--from", "last week")
    assert done.returncode != 0 and "--from/--to" in done.stderr
    # With an SLA policy in force, its calendars: payments on office hours, c3's 65 h become 3600 s.
    policy = tmp_path / "sla.yaml"
    policy.write_text(
        "version: 1\ncalendars:\n  office:\n    tz: UTC\n    hours:\n      mon-fri: ['09:00-17:00']\n"
        "default_calendar: 24/7\ngroups:\n  payments: office\ntargets:\n"
        + "".join(f"  P{p}: {{first_response: 1h}}\n" for p in range(1, 5))
    )
    published = subprocess.run(
        [*SWITCHBOARD, "sla", "publish", str(policy), "--author", "test"], env=env, capture_output=True, text=True
    )
    assert published.returncode == 0, published.stderr
    done = report("first-response", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"group": "payments", "conversations": 2, "p50_s": 3600.0, "p90_s": 3600.0},
        {"group": "security", "conversations": 2, "p50_s": 300.0, "p90_s": 1200.0},
    ]


def test_without_drill_down_the_same_figures_and_no_ids(store_path: Path) -> None:
    con = duckdb.connect(str(store_path), read_only=True)
    plain = Reports(con, lambda group: OFFICE if group == "payments" else Calendar.always(), drill=False)
    r = plain.first_response(by="group")
    assert r.rows == [("payments", 2, 3600.0, 3600.0), ("security", 2, 300.0, 1200.0)]
    assert r.convs == [[], []]
    assert plain.reopens().rows == [("payments", 2, 0, 0.0), ("security", 2, 1, 0.5)]
    con.close()
