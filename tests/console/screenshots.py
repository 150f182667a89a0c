"""Screenshots of every report page (docs/analytics.md), from a generated month of realistic traffic:
``python -m tests.console.screenshots docs/img`` (``make report-screenshots``).

The month (November 2026, UTC) is written straight into an analytics store through the exporter's
own ``Store.commit``, in the rows the exporter writes: ~2,900 conversations (~14,000 events) with a weekly and daily
rhythm (busiest 01:00-13:00 UTC, weekends lighter) and an incident on the 18th (withdrawals stuck),
four groups (tests/router/rules.yaml), three channels, six languages, 22 agents; first responses and
resolutions drawn from long-tailed (log-normal) times, slower off-hours; SLA breaches where they
passed the targets (1 h first response, 8 h resolution); knowledge-base answers that solve, get
reopened or are handed on; misroutes moved between groups; reopens; CSAT ratings. The complaints
page needs texts, which the store does not keep: 70 complaints of the labelled set
(insight/complaints/dev.jsonl) are routed by the real worker into a private Redis.

Chromium (Debian's, as the browser tests) opens each page as an admin at 1200x800 and saves
``reports-{name}.png``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright
from pydantic import SecretStr

import insight
from adapters.sandbox import SandboxUsers
from router.config import load_settings
from router.console import ConsoleServer, create_app
from router.exporter import Batch, Row, Store
from router.redis import EmbeddedRedis
from router.runtime import Runtime
from router.weekly import store_opener
from router.worker import Worker
from tests.conftest import ROUTER_RULES
from tests.console.conftest import PASSWORD
from tests.console.test_browser import ARGS, CHROMIUM
from tests.console.test_reports_pages import TAG_ALL
from tests.router.helpers import drain, message

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 30
SEED = 20
GROUPS = {"payments": 0.36, "general": 0.26, "verification": 0.22, "security": 0.16}
CHANNELS = {"telegram": 0.52, "email": 0.26, "discord": 0.22}
LANGS = {"en": 0.42, "zh": 0.24, "ru": 0.12, "es": 0.09, "tr": 0.07, "vi": 0.06}
AGENTS = {
    "payments": ["mei", "omar", "lena", "tom", "ivan", "sara"],
    "general": ["ana", "li", "max", "eva", "joe"],
    "verification": ["kim", "raj", "nina", "paul", "zoe"],
    "security": ["alex", "yuki", "ben", "olga", "sam", "ada"],
}
# Median first response and resolution (minutes) per group, in office hours.
FIRST_M = {"payments": 20, "general": 30, "verification": 45, "security": 6}
RESOLVE_M = {"payments": 120, "general": 60, "verification": 200, "security": 90}
# Misroutes: from -> (to, share).
MOVES = {"verification": ("payments", 0.12), "general": ("security", 0.06), "payments": ("verification", 0.04)}
HOURLY = [
    0.5,
    0.9,
    1.2,
    1.4,
    1.5,
    1.5,
    1.4,
    1.3,
    1.3,
    1.2,
    1.1,
    1.0,
    0.9,
    0.8,
    0.6,
    0.5,
    0.4,
    0.3,
    0.3,
    0.3,
    0.3,
    0.3,
    0.3,
    0.4,
]
INCIDENT_DAY = 17  # the 18th
#: Complaints routed per cause of the labelled set.
COMPLAINTS = {
    "withdrawal_delay": 20,
    "p2p_dispute": 12,
    "outage": 10,
    "fees": 10,
    "account_frozen": 10,
    "liquidation": 8,
}
PAGES = [
    ("volume", "by=group&bucket=day"),
    ("first-response", "by=group"),
    ("resolution", "by=agent&group=payments"),
    ("sla", ""),
    ("reopens", ""),
    ("answers", ""),
    ("csat", ""),
    ("transfers", ""),
    ("complaints", "days=7"),
]


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def _minutes(rng: random.Random, median: float, at: datetime) -> float:
    off_hours = not 1 <= at.hour < 14 or at.weekday() >= 5
    return rng.lognormvariate(math.log(median * (2 if off_hours else 1)), 0.8)


class Month:
    """The month's events, as rows of the exporter's ``events`` table."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.rows: list[Row] = []
        self.end = START + timedelta(days=DAYS)

    def _event(self, conv: str, group: str, typ: str, at: datetime, info: tuple[Any, ...], **data: Any) -> None:
        channel, lang, tags, sla = info
        agent = data.get("agent") or data.get("by")
        prio = data.get("prio")
        ms = int(at.timestamp() * 1000)
        self.rows.append((
            f"events:{group}@0/{ms}-{len(self.rows)}", f"events:{group}", 0, conv, typ, ms, group, channel, lang,
            agent, None if prio is None else str(prio), json.dumps(data), json.dumps(tags), sla,
        ))  # fmt: skip

    def generate(self) -> list[Row]:
        n = 0
        for day in range(DAYS):
            base = 125 if (START + timedelta(days=day)).weekday() < 5 else 80
            for hour, weight in enumerate(HOURLY):
                count = round(self.rng.gauss(base * weight / 24, math.sqrt(base * weight / 24)))
                incident = day == INCIDENT_DAY and 3 <= hour < 12
                for _ in range(max(0, count) + (9 if incident else 0)):
                    at = START + timedelta(days=day, hours=hour, seconds=self.rng.randrange(3600))
                    n += 1
                    self.conversation(f"{n}", at, "payments" if incident and self.rng.random() < 0.7 else None)
        return self.rows

    def conversation(self, conv: str, t0: datetime, group: str | None) -> None:
        rng = self.rng
        group = group or _pick(rng, GROUPS)
        tags = (
            [group]
            + (["vip"] if rng.random() < 0.1 else [])
            + (["withdrawal"] if group == "payments" and rng.random() < 0.5 else [])
        )
        sla = None if group == "general" and rng.random() < 0.5 else 1
        info = (_pick(rng, CHANNELS), _pick(rng, LANGS), tags, sla)
        prio = {"security": 1, "payments": 2}.get(group, 3)
        self._event(conv, group, "created", t0, info, prio=prio)
        at = t0
        if group in ("general", "payments") and rng.random() < 0.3:
            at = t0 + timedelta(seconds=5)
            self._event(conv, group, "answered", at, info, article="faq")
            fate = rng.random()
            if fate < 0.55:
                self._event(conv, group, "closed", at + timedelta(minutes=2), info, by="kb")
                self._csat(conv, group, at + timedelta(minutes=30), info, 4.3)
                return
            if fate < 0.75:
                at += timedelta(minutes=rng.randint(2, 20))
                self._event(conv, group, "reopened", at, info, prio=prio)
        agent = rng.choice(AGENTS[group])
        first = at + timedelta(minutes=_minutes(rng, FIRST_M[group], at))
        if first >= self.end:
            return
        self._event(conv, group, "claimed", first - timedelta(minutes=1), info, agent=agent)
        if sla and first - t0 > timedelta(hours=1):
            self._event(conv, group, "sla_breached", t0 + timedelta(hours=1), info, target="first_response")
        self._event(conv, group, "replied", first, info, by=agent, reply=f"r{conv}")
        moved_to, share = MOVES.get(group, ("", 0.0))
        moved = rng.random() < share
        if moved:
            at = first + timedelta(minutes=rng.randint(1, 15))
            self._event(conv, group, "moved", at, info, to=moved_to, by=agent)
            group = moved_to
            self._event(conv, group, "created", at, info, prio=prio, **{"from": "moved"})
            agent = rng.choice(AGENTS[group])
            first = at + timedelta(minutes=_minutes(rng, FIRST_M[group], at))
            self._event(conv, group, "replied", first, info, by=agent, reply=f"r{conv}b")
        closed = first + timedelta(minutes=_minutes(rng, RESOLVE_M[group], first))
        if closed >= self.end:
            return
        if sla and closed - t0 > timedelta(hours=8):
            self._event(conv, group, "sla_breached", t0 + timedelta(hours=8), info, target="resolution")
        self._event(conv, group, "closed", closed, info, by=agent)
        if rng.random() < {"verification": 0.12, "payments": 0.08}.get(group, 0.05):
            again = closed + timedelta(hours=rng.randint(2, 30))
            if again + timedelta(hours=3) < self.end:
                self._event(conv, group, "reopened", again, info, prio=prio)
                self._event(conv, group, "closed", again + timedelta(hours=3), info, by=agent)
        mean = {"security": 4.4, "payments": 3.7, "verification": 3.3, "general": 4.1}[group] - (0.8 if moved else 0)
        self._csat(conv, group, closed + timedelta(minutes=20), info, mean)

    def _csat(self, conv: str, group: str, at: datetime, info: tuple[Any, ...], mean: float) -> None:
        if self.rng.random() < 0.35 and at < self.end:
            rating = min(5, max(1, round(self.rng.gauss(mean, 1.0))))
            self._event(conv, group, "csat", at, info, rating=rating, survey=f"s{conv}")


def write_month(path: Path) -> int:
    rows = Month().generate()
    store = Store(path)
    store.commit(Batch(rows=rows, cursors={"events:all@0": ("1-0", len(rows))}))
    store.close()
    return len(rows)


async def route_complaints(rt: Runtime) -> None:
    """The labelled complaints of six causes, routed by the real worker (tagged complaint)."""
    labelled = Path(insight.__file__).parent / "complaints" / "dev.jsonl"
    dev = [json.loads(line) for line in labelled.read_text().splitlines()]
    for cause, count in COMPLAINTS.items():
        for i, row in enumerate([r for r in dev if r["cause"] == cause][:count]):
            await rt.inbox.append(message(row["text"], user=f"{cause}-{i}"))
    await drain(Worker(rt))


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sb-report-shots-") as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(ROUTER_RULES.read_text() + TAG_ALL)
        settings = load_settings(
            None,
            prefix="shots:",
            redis={"data_dir": str(Path(tmp) / "var")},
            rules={"file": str(rules)},
            web={"port": 0, "admin_password": SecretStr(PASSWORD)},
        )
        path = settings.analytics.path(settings.redis.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"{write_month(path)} events in {path}", file=sys.stderr)
        with EmbeddedRedis(Path(tmp) / "redis", private=True) as redis:
            async with Runtime(settings, redis.url) as rt:
                await route_complaints(rt)
                app = create_app(rt, settings, SandboxUsers(rt.channel_context()), store_opener(path))
                server = ConsoleServer(app, "127.0.0.1", 0)
                await server.start()
                try:
                    await shoot(server.url, out)
                finally:
                    await server.close()


async def shoot(url: str, out: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = await (await browser.new_context(viewport={"width": 1200, "height": 800})).new_page()
        await page.goto(url + "/login")
        await page.fill("input[name=name]", "admin")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_load_state("networkidle")
        for name, query in PAGES:
            await page.goto(f"{url}/reports/{name}" + (f"?{query}" if query else ""), timeout=300_000)
            await page.wait_for_load_state("networkidle")
            if name == "volume":  # a bar clicked: its conversations listed under the chart
                await page.wait_for_function("document.getElementById('report-chart').chart !== undefined")
                x, y = await page.evaluate(
                    "() => { const c = document.getElementById('report-chart').chart;"
                    " const bar = c.getDatasetMeta(1).data[17]; const box = c.canvas.getBoundingClientRect();"
                    " return [box.left + bar.x, box.top + (bar.y + bar.base) / 2]; }"
                )
                await page.mouse.click(x, y)
            target = out / f"reports-{name}.png"
            await page.screenshot(path=str(target))
            print(f"{target}", file=sys.stderr)
        await browser.close()


if __name__ == "__main__":
    if not CHROMIUM.exists():
        raise SystemExit("Debian's chromium is not installed (apt-get install chromium)")
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(folder))
