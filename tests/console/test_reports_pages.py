"""The report pages over HTTP (router/console/reportviews.py): figures, drill-down and exports from
the fixed event log of tests/router/test_reports.py (its figures are worked out by hand there; the
console has no SLA policy here, so durations are in wall time), who may see what, bad filters, and
a store that cannot be read."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.conftest import ROUTER_RULES
from tests.console.conftest import PASSWORD, Served
from tests.router.eventlog import write_store
from tests.router.test_reports import CONVS, CSAT, LOG

# Every message but a 2FA question is a complaint (as in tests/router/test_complaints.py).
TAG_ALL = """
  - id: complaint
    when: {not: {contains_any: [2fa]}}
    then: {tags: [complaint]}
"""


@pytest.fixture
def store(served: Served) -> Path:
    settings = served.rt.settings
    return write_store(settings.analytics.path(settings.redis.data_dir), LOG, CONVS)


def page_data(response: httpx.Response) -> dict[str, Any]:
    """The figures a report page hands its script (the JSON block)."""
    assert response.status_code == 200, response.text
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', response.text, re.S)
    assert found, response.text
    data: dict[str, Any] = json.loads(found.group(1))
    return data


async def test_volume_page_figures_chart_and_drill(served: Served, store: Path) -> None:
    async with served.api(await served.user("boss", "admin")) as api:
        data = page_data(await api.get("/reports/volume", params={"by": "group", "bucket": "day"}))
        assert data["rows"] == [
            ["2026-11-02", "security", 2],
            ["2026-11-03", "payments", 2],
            ["2026-11-06", "payments", 1],
            ["2026-11-10", "security", 1],
        ]
        assert data["convs"] == [["c1", "c2"], ["c4", "c5"], ["c3"], ["c6"]]
        chart = data["chart"]
        assert chart["labels"] == ["2026-11-02", "2026-11-03", "2026-11-06", "2026-11-10"]
        # One stacked dataset per group, each bar pointing at its row (the drill-down's key).
        assert chart["datasets"] == [
            {"label": "security", "data": [2, None, None, 1], "rows": [0, None, None, 3]},
            {"label": "payments", "data": [None, 2, 1, None], "rows": [None, 1, 2, None]},
        ]
        drill = await api.get("/reports/volume/drill", params={"row": "1", "by": "group", "bucket": "day"})
        assert drill.status_code == 200
        assert re.findall(r'href="/conversations/(\w+)"', drill.text) == ["c4", "c5"]


async def test_filters_by_group_tag_and_period(served: Served, store: Path) -> None:
    async with served.api(await served.user("boss", "admin")) as api:
        # The first week (02-08, both days included), tag payments: c3 (Fri 06) and c5 (Tue 03).
        params = {"start": "2026-11-02", "end": "2026-11-08", "tag": "payments", "by": "channel", "bucket": "week"}
        data = page_data(await api.get("/reports/volume", params=params))
        assert data["rows"] == [["2026-11-02", "email", 1], ["2026-11-02", "telegram", 1]]
        assert data["convs"] == [["c3"], ["c5"]]
        # Transfers, group security: c3 moved payments -> security.
        data = page_data(await api.get("/reports/transfers", params={"group": "security"}))
        assert data["rows"] == [["payments", "security", 1]]
        assert data["chart"]["labels"] == ["payments → security"]


async def test_first_response_in_wall_time_without_a_policy(served: Served, store: Path) -> None:
    async with served.api(await served.user("boss", "admin")) as api:
        data = page_data(await api.get("/reports/first-response", params={"by": "group"}))
        # payments: c3 Fri 16:30 -> Mon 09:30 = 65 h = 234,000 s, c5 3,600 s; p50 rank 1, p90 rank 2.
        assert data["rows"] == [["payments", 2, 3600.0, 234000.0], ["security", 2, 300.0, 1200.0]]
        assert data["chart"]["datasets"][1] == {"label": "p90", "data": [65.0, 0.33], "rows": [0, 1]}


async def test_export_csv_and_parquet_with_the_conversation_ids(served: Served, store: Path) -> None:
    async with served.api(await served.user("boss", "admin")) as api:
        response = await api.get("/reports/reopens.csv")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert re.match(
            r'attachment; filename="switchboard-reopens-\d{8}-\d{4}\.csv"', response.headers["content-disposition"]
        )
        rows = list(csv.reader(io.StringIO(response.text)))
        # Closed: payments c3 c4, security c1 c2; reopened: c2 only (c5 was never closed).
        assert rows == [
            ["group", "closed", "reopened", "reopen_rate", "conv_ids"],
            ["payments", "2", "0", "0.0", "[]"],
            ["security", "2", "1", "0.5", "[c2]"],
        ]
        parquet = await api.get("/reports/volume.parquet", params={"group": "payments", "by": "tag"})
        assert parquet.status_code == 200
        path = store.parent / "got.parquet"
        path.write_bytes(parquet.content)
        got = duckdb.sql(f"SELECT tag, conversations, conv_ids FROM '{path}'").fetchall()
        # Opened in payments: c3 (payments), c4 (untagged), c5 (payments) on three days.
        assert sorted(got, key=str) == sorted(
            [("payments", 1, ["c5"]), (None, 1, ["c4"]), ("payments", 1, ["c3"])], key=str
        )


async def test_supervisors_see_their_groups_only_and_agents_nothing(served: Served, store: Path) -> None:
    async with served.api(await served.user("sue", "supervisor", ("payments",))) as api:
        # No group asked: forced to theirs; c3 was in payments before it moved to security.
        data = page_data(await api.get("/reports/volume", params={"by": "group"}))
        assert [c for convs in data["convs"] for c in convs] == ["c4", "c5", "c3"]
        assert (await api.get("/reports/volume", params={"group": "security"})).status_code == 403
        assert (await api.get("/reports/volume.csv", params={"group": "security"})).status_code == 403
        assert (await api.get("/reports/volume/drill", params={"group": "security", "row": "0"})).status_code == 403
        assert (await api.get("/reports/complaints")).status_code == 403
        index = await api.get("/reports")
        assert index.status_code == 200 and 'href="/reports/complaints"' not in index.text
    async with served.api(await served.user("ann", "agent", ("payments",))) as api:
        for path in ("/reports", "/reports/volume", "/reports/volume.csv", "/reports/volume/drill?row=0"):
            response = await api.get(path)
            assert response.status_code == 403, path
            assert "reports are for admins and supervisors" in response.text
        queues = await api.get("/queues")
        assert 'href="/reports"' not in queues.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=2026-13-01", "start: a day as YYYY-MM-DD (not 2026-13-01)"),
        ("start=2026-11-09&end=2026-11-02", "end: a day on or after start"),
        ("by=weather", "by: one of group, channel, language, tag (not weather)"),
        ("bucket=minute", "bucket: one of day, hour, week, month (not minute)"),
        ("row=9", "row: a row number from 0 to 3 (not 9)"),
    ],
)
async def test_a_bad_filter_is_a_400_that_says_why(served: Served, store: Path, query: str, message: str) -> None:
    async with served.api(await served.user("boss", "admin")) as api:
        path = "/reports/volume/drill" if query.startswith("row") else "/reports/volume"
        response = await api.get(f"{path}?{query}")
        assert response.status_code == 400
        assert message in html.unescape(response.text)
        assert (await api.get("/reports/weather")).status_code == 404
        assert (await api.get("/reports/volume.xlsx")).status_code == 404


async def test_a_store_that_cannot_be_read_is_said_so(served: Served) -> None:
    settings = served.rt.settings
    path = settings.analytics.path(settings.redis.data_dir)
    async with served.api(await served.user("boss", "admin")) as api:
        response = await api.get("/reports/volume")
        assert response.status_code == 503
        text = html.unescape(response.text)
        assert f"the analytics store cannot be read from this process: there is no analytics store at {path}" in text
        write_store(path, LOG, CONVS)
        # Another process writes the file (an exporter elsewhere): DuckDB lets nobody else open it.
        hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", hold, str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
            response = await api.get("/reports/sla.csv")
            assert response.status_code == 503
            assert f"{path} is held by another process's exporter" in html.unescape(response.text)
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            await holder.wait()
        assert (await api.get("/reports/sla")).status_code == 200


async def test_csat_by_agent_and_supervisors_made_through_the_api(served: Served) -> None:
    settings = served.rt.settings
    write_store(settings.analytics.path(settings.redis.data_dir), LOG + CSAT, CONVS)
    async with served.api(await served.user("boss", "admin")) as api:
        data = page_data(await api.get("/reports/csat", params={"by": "agent"}))
        # tests/router/test_reports.py's hand-computed figures: alice 5 + 4, bob 2, nobody 3.
        assert data["rows"] == [["alice", 2, 4.5, 1.0], ["bob", 1, 2.0, 0.0], [None, 1, 3.0, 0.0]]
        assert data["chart"]["labels"] == ["alice", "bob", "(none)"]
        made = await api.post("/api/users", json={"name": "sue", "role": "supervisor", "groups": ["security"]})
        assert made.status_code in (200, 201), made.text
        assert (await api.get("/api/users/sue")).json()["role"] == "supervisor"
    # A supervisor's ratings are those of conversations that were in their group.
    await served.console.users.set_password("sue", PASSWORD)
    client, _ = await served.browser_session("sue")
    try:
        data = page_data(await client.get("/reports/csat"))
        assert data["rows"] == [["payments", 1, 4.0, 1.0], ["security", 2, 3.5, 0.5]]
    finally:
        await client.aclose()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """The router tests' rules, and every message but a 2FA question tagged a complaint."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(ROUTER_RULES.read_text() + TAG_ALL)
    return rules


async def test_complaint_causes_with_their_conversations_kept_a_while(served: Served) -> None:
    texts = [
        "my withdrawal has been pending for 3 days",
        "withdrawal still pending after two days, where is my money",
        "提现三天了还没到账",
    ]
    convs = [await served.route(text, user=f"u{i}") for i, text in enumerate(texts)]
    await served.route("how do I enable 2fa", user="q")
    async with served.api(await served.user("boss", "admin")) as api:
        response = await api.get("/reports/complaints", params={"days": "7"})
        assert response.status_code == 200, response.text
        page = html.unescape(response.text)
        assert re.search(r'Complaints</span><span class="kpi-value">3<', page)
        assert sorted(re.findall(r'href="/conversations/(\w+)"', page)) == sorted(convs)
        assert any(f"“{text}”" in page for text in texts)  # quoted as written
        kept = served.console.reports._complaints[7.0][1]
        again = await api.get("/reports/complaints")
        assert again.status_code == 200 and served.console.reports._complaints[7.0][1] is kept
        assert (await api.get("/reports/complaints", params={"days": "0"})).status_code == 400
