"""The reports in Chromium (issue 20's acceptance): conversations routed by the real worker and
exported by a real exporter in this process, the console reading the store through it (as in
``switchboard run``); open the reports, filter by group and tag, click a bar of the chart and see
its conversations, export CSV."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from router.config import Settings
from router.exporter import Exporter
from router.runtime import Runtime
from router.weekly import store_opener
from tests.console.conftest import Served, serving
from tests.console.test_browser import browser, logged_in, shot  # noqa: F401  (the session's Chromium)

# (user, text): what each conversation opens with, and where tests/router/rules.yaml routes it.
MESSAGES = [
    ("u1", "my account was hacked"),  # security, tag security
    ("u2", "unauthorized withdrawal from my wallet"),  # security (the first rule wins)
    ("u3", "2fa code never arrives"),  # security
    ("u4", "my deposit is late"),  # payments, tag payments
    ("u5", "withdrawal pending since Monday"),  # payments
    ("u6", "hello there"),  # general, no rule
]


@pytest.fixture
async def exported(rt: Runtime, web_settings: Settings) -> AsyncIterator[tuple[Served, Exporter]]:
    """The console beside a running exporter, reading the store through it."""
    exporter = Exporter(rt)
    await exporter.start()
    path = rt.settings.analytics.path(rt.settings.redis.data_dir)
    try:
        async with serving(rt, web_settings, store_opener(path, exporter)) as console:
            yield console, exporter
    finally:
        await exporter.close()


async def test_filter_drill_into_a_bar_and_export_csv(
    browser: Browser,  # noqa: F811
    exported: tuple[Served, Exporter],
    tmp_path: Path,
) -> None:
    served, exporter = exported
    convs = {user: await served.route(text, user=user) for user, text in MESSAGES}
    security = sorted(convs[u] for u in ("u1", "u2", "u3"))
    # Every event of the six conversations in the store (the exporter polls every poll_s).
    for _ in range(400):
        with store_opener(exporter.path, exporter)() as con:
            found = con.execute("SELECT count(DISTINCT conv) FROM events WHERE type = 'created'").fetchone()
        if found is not None and found[0] == len(MESSAGES):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the exporter did not export the conversations: {exporter.health()}")
    await served.user("boss", "admin")
    async with logged_in(browser, served, "boss") as page:
        await page.click("nav.sidebar >> text=Reports")
        await page.click("main a[href='/reports/volume']")
        await expect(page.locator("h1")).to_have_text("Volume")
        await page.select_option("select[name=group]", "security")
        await page.fill("input[name=tag]", "security")
        await page.click("#report-filters button[type=submit]")
        await page.wait_for_url("**/reports/volume?*group=security*")
        await page.wait_for_function("document.getElementById('report-chart').chart !== undefined")
        # The one bar (today, security): where Chart.js drew it, clicked as a user would.
        x, y = await page.evaluate(
            "() => { const c = document.getElementById('report-chart').chart;"
            " const bar = c.getDatasetMeta(0).data.find((b) => b && !b.skip);"
            " const box = c.canvas.getBoundingClientRect();"
            " return [box.left + bar.x, box.top + (bar.y + bar.base) / 2]; }"
        )
        await page.mouse.click(x, y)
        drill = page.locator("#drill-list a")
        await expect(drill).to_have_count(3)
        assert sorted(await drill.evaluate_all("links => links.map((a) => a.dataset.conv)")) == security
        await shot(page, "reports-volume-drill")
        async with page.expect_download() as info:
            await page.click("#export-csv")
        download = await info.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        assert saved.name.startswith("switchboard-volume-") and saved.suffix == ".csv"
        with saved.open(newline="") as f:
            rows = list(csv.reader(f))
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        assert rows[0] == ["period", "group", "conversations", "conv_ids"]
        assert len(rows) == 2 and rows[1][:3] == [f"{today} 00:00:00", "security", "3"]
        assert sorted(rows[1][3].strip("[]").split(", ")) == security
        # The drill link of the table's count lists the same conversations, server-side.
        await page.click(".report-table a[href*='/drill']")
        await expect(page.locator("#drill-list a")).to_have_count(3)
        assert sorted(await page.locator("#drill-list a").evaluate_all(
            "links => links.map((a) => a.textContent.slice(1))"
        )) == security  # fmt: skip
