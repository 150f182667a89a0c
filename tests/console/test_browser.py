"""Browser tests: Playwright driving Debian's Chromium against the console served by uvicorn.

A router worker and the sandbox adapter run as tasks in the test's loop, so a message typed in the
simulator is routed, shows up live in the agent's queue, and the agent's reply is delivered back to
the simulator. Screenshots of the main pages go to a temporary folder, or — to refresh the README's —
to the folder named by SWITCHBOARD_SCREENSHOTS (``SWITCHBOARD_SCREENSHOTS=docs/screenshots make unit``),
so that a test run does not rewrite tracked files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright, expect

from adapters.sandbox import SandboxAdapter
from router import assignment
from router.worker import Worker
from tests.console.conftest import PASSWORD, Served, eventually

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("SWITCHBOARD_SCREENSHOTS") or tempfile.mkdtemp(prefix="sb-screenshots-"))
SHOTS.mkdir(parents=True, exist_ok=True)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REFUND_RULE = """
  - id: refund
    when: {contains_any: [refund]}
    then: {tags: [complaints], priority: P2, route: verification}
"""

if not CHROMIUM.exists():
    # On CI the Makefile installs it, and a missing browser must fail there rather than skip.
    if os.environ.get("CI"):
        raise RuntimeError("/usr/bin/chromium is missing: run the Makefile set-up (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        await b.close()


@pytest.fixture
async def running(served: Served) -> AsyncIterator[Served]:
    """A router worker and the sandbox adapter next to the console, like `switchboard run`."""
    worker = Worker(served.rt)
    sandbox = SandboxAdapter(served.rt.channel_context())
    await sandbox.start()
    task = asyncio.create_task(worker.run())
    try:
        yield served
    finally:
        worker.stop()
        await task
        await sandbox.close()


@contextlib.asynccontextmanager
async def logged_in(browser: Browser, served: Served, name: str) -> AsyncIterator[Page]:
    context: BrowserContext = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(served.url + "/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")
    try:
        yield page
    finally:
        await context.close()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_login_page_and_wrong_password(browser: Browser, served: Served) -> None:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    await page.goto(served.url + "/queues")
    await expect(page).to_have_url(served.url + "/login?next=/queues")
    await shot(page, "login")
    await page.fill("input[name=name]", "admin")
    await page.fill("input[name=password]", "not the password")
    await page.click("button[type=submit]")
    await expect(page.locator(".flash-error")).to_contain_text("Wrong user name or password")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(served.url + "/queues")
    await context.close()


async def test_agent_sees_only_its_group(browser: Browser, served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    await served.route("my deposit is missing since yesterday", user="payer")
    await served.route("my account was hacked", user="victim")
    async with logged_in(browser, served, "ann") as page:
        await expect(page).to_have_url(served.url + "/queues")
        tabs = page.locator(".tabs .tab")
        await expect(tabs).to_have_count(1)
        await expect(tabs.first).to_contain_text("payments")
        await expect(page.locator("table.grid").first).to_contain_text("my deposit is missing")
        assert "hacked" not in await page.content()
        await expect(page.locator(".sidebar")).not_to_contain_text("Rules editor")
        response = await page.goto(served.url + "/queues?group=security")
        assert response is not None and response.status == 403


async def test_live_queue_claim_reply_and_sandbox(browser: Browser, running: Served) -> None:
    served = running
    await served.user("ann", "agent", ("payments",))
    await served.route("I lost my deposit on the wrong network", user="early")
    async with logged_in(browser, served, "ann") as agent, logged_in(browser, served, "admin") as admin:
        await expect(agent.locator("[data-live-indicator]")).to_have_attribute("data-state", "on")
        # The admin writes as sandbox user alice in the simulator ...
        await admin.goto(served.url + "/sandbox?user=alice")
        await admin.fill("textarea[name=text]", "my withdrawal of 0.5 BTC has not arrived")
        await admin.click("text=Send as alice")
        await expect(admin.locator(".flash-ok")).to_contain_text("Sent")
        # ... and it appears in the agent's payments queue without a reload.
        row = agent.locator("tr", has_text="my withdrawal of 0.5 BTC has not arrived")
        await expect(row).to_be_visible(timeout=15_000)
        await expect(agent.locator(".tab.active .count")).to_have_text("2")
        await shot(agent, "queues")
        await row.locator("button", has_text="Claim").click()
        await expect(agent.locator("h1")).to_contain_text("alice")
        await expect(agent.locator(".timeline")).to_contain_text("claimed by ann")
        await agent.select_option("select[data-canned-for]", label="Withdrawal check")
        await expect(agent.locator("#reply-text")).to_have_value(
            "Withdrawals are usually confirmed within 30 minutes. Could you send us the transaction ID "
            "(txid) so we can check its status on the network?"
        )
        await agent.fill("#reply-text", "Hi alice, your withdrawal is confirmed on chain now.")
        await agent.click("text=Send reply")
        await expect(agent.locator(".flash-ok")).to_contain_text("Reply queued")
        # The sandbox adapter delivers it; the status turns to delivered live.
        await expect(agent.locator(".msg-out .delivery")).to_have_text("delivered", timeout=15_000)
        await shot(agent, "conversation")
        # The reply reaches alice in the simulator (it polls).
        await expect(admin.locator("#sandbox-replies")).to_contain_text(
            "your withdrawal is confirmed on chain now", timeout=15_000
        )
        await shot(admin, "sandbox")


async def test_admin_changes_a_rule_replays_and_publishes(browser: Browser, running: Served) -> None:
    served = running
    await served.console.sandbox_send("rita", "I want a refund for my last trade")
    await served.console.sandbox_send("sam", "my deposit has not arrived")
    await eventually(lambda: _routed(served, 2))
    [conv] = await served.rt.queues.head("general")
    assert conv.sender_id == "rita"
    async with logged_in(browser, served, "admin") as page:
        await shot(page, "dashboard")
        await page.goto(served.url + "/admin/rules")
        source = await page.input_value("#source")
        # A broken draft first: the error shows at its line.
        broken = "\n  - id: broken\n    when: {nope: 1}\n    then: {route: general}\n"
        await page.fill("#source", source.rstrip("\n") + broken)
        await page.click("button[value=validate]")
        error = page.locator(".inline-error").first
        await expect(error).to_contain_text(f"line {len(source.rstrip(chr(10)).splitlines()) + 2}")
        await expect(page.locator("#validation-state")).to_contain_text("error")
        await shot(page, "rules-errors")
        # The real change: a refund rule.
        await page.fill("#source", source.rstrip("\n") + "\n" + REFUND_RULE)
        await page.fill("#try textarea[name=text]", "please refund me")
        await page.click("button[value=try]")
        await expect(page.locator("#decision .decision-group")).to_have_text("verification")
        await expect(page.locator("#decision .trace")).to_contain_text("refund")
        await page.click("button[value=replay]")
        await expect(page.locator(".replay-summary")).to_contain_text("1 of 2 decisions change")
        changed = page.locator(".replay-table tbody tr")
        await expect(changed).to_have_count(1)
        await expect(changed).to_contain_text("I want a refund for my last trade")
        await expect(changed.locator("td").nth(2)).to_contain_text("general")
        await expect(changed.locator("td.changed")).to_contain_text("verification")
        await shot(page, "rules")
        await page.fill("input[name=comment]", "refunds go to verification")
        await page.click("button[value=publish]")
        await expect(page).to_have_url(served.url + "/admin/rules/history")
        await expect(page.locator("table.grid")).to_contain_text("refunds go to verification")
        await expect(page.locator("tr.current")).to_contain_text("v1")
        await shot(page, "rules-history")
        # Workers poll the active version (rules_poll_s) and report the one they route with in
        # their heartbeat: once the worker has it, the next message is routed by the new rule.
        published = await served.rt.rules.active()
        assert published is not None

        async def worker_switched() -> bool:
            health = (await served.rt.stats.read())["health"]
            return any(k.startswith("worker:") and h["rules"] == published.version for k, h in health.items())

        await eventually(worker_switched)
        await served.console.sandbox_send("tom", "refund my fees please")

        async def routed_by_new_rule() -> bool:
            return any(c.sender_id == "tom" for c in await served.rt.queues.head("verification"))

        await eventually(routed_by_new_rule)
        await page.goto(served.url + "/queues?group=verification")
        await expect(page.locator("table.grid").first).to_contain_text("refund my fees please")
        await page.goto(served.url + "/admin/users")
        await shot(page, "users")
        await page.goto(served.url + "/admin/dashboard")
        await expect(page.locator(".kpis")).to_contain_text("Waiting")
        await shot(page, "dashboard")


async def _routed(served: Served, n: int) -> bool:
    raw = await served.rt.client.hget(served.rt.keys.stats, "routed:sandbox")
    return int(raw or 0) >= n


async def test_script_and_img_onerror_are_shown_as_text(browser: Browser, served: Served) -> None:
    await served.user("sec", "agent", ("security",))
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> my account was hacked'
    cid = await served.route(evil, user="mallory")
    async with logged_in(browser, served, "sec") as page:
        await expect(page.locator("table.grid").first).to_contain_text("<script>window.pwned = 1</script>")
        await page.goto(f"{served.url}/conversations/{cid}")
        bubble = page.locator(".msg-in .bubble").first
        await expect(bubble).to_have_text(evil)
        assert await page.locator(".timeline img").count() == 0
        assert await page.locator(".timeline script").count() == 0
        await page.wait_for_timeout(300)
        assert await page.evaluate("window.pwned") is None


async def test_a_change_before_the_live_stream_starts_still_shows(browser: Browser, served: Served) -> None:
    """The live stream starts at "now": what changed between the page's render and the stream's
    start must still show (each (re)connection refreshes the live area once)."""
    await served.user("ann", "agent", ("payments",))
    await served.route("my deposit is missing since yesterday", user="payer")
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await context.route("**/api/events*", hold)
    page = await context.new_page()
    try:
        await page.goto(served.url + "/login")
        await page.fill("input[name=name]", "ann")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await expect(page.locator("table.grid").first).to_contain_text("my deposit is missing")
        # The page is rendered and its stream not started yet: a new conversation arrives now.
        await served.route("withdrawal pending for two hours", user="waiter")
        release.set()
        await expect(page.locator("table.grid").first).to_contain_text("withdrawal pending", timeout=10_000)
    finally:
        await context.close()


async def test_an_agent_goes_online_and_gets_a_conversation_assigned_live(
    browser: Browser, running: Served, tmp_path: Path
) -> None:
    served = running
    await served.user("ann", "agent", ("payments",))
    policy = tmp_path / "assignment.yaml"
    policy.write_text("version: 1\ngroups:\n  payments: {policy: least_loaded}\n")
    settings = served.rt.settings
    assign_settings = settings.assign.model_copy(update={"policy_file": policy, "poll_s": 0.05, "sweep_s": 0.2})
    service = await assignment.service(served.rt, settings.model_copy(update={"assign": assign_settings}))
    assert service is not None
    await service.presence.set_profile("ann", capacity={"telegram": 3})
    await service.start()
    try:
        async with logged_in(browser, served, "ann") as agent:
            status = agent.locator("[data-presence-status]")
            await expect(status).to_have_text("offline")
            await served.route("my deposit is missing since Monday", user="payer")
            waiting = agent.locator("tr", has_text="my deposit is missing since Monday")
            await expect(waiting.locator("button", has_text="Claim")).to_be_visible(timeout=15_000)  # offline: not hers
            await agent.click("[data-presence-set=online]")
            await expect(status).to_have_text("online")
            mine = agent.locator("section.card", has_text="My conversations")
            await expect(mine).to_contain_text("my deposit is missing since Monday", timeout=15_000)
            await expect(waiting.locator("button", has_text="Claim")).to_have_count(0)  # left the queue
            await shot(agent, "assigned-live")
            # She answers it.
            await mine.locator("a", has_text="my deposit is missing since Monday").first.click()
            await agent.fill("#reply-text", "Hi, we are checking your deposit now.")
            await agent.click("text=Send reply")
            await expect(agent.locator(".flash-ok")).to_contain_text("Reply queued")
            await expect(agent.locator(".timeline")).to_contain_text("we are checking your deposit now")
    finally:
        await service.close()


SECONDS_POLICY = """\
version: 1
targets:
  P1: {first_response: 6s, resolution: 1h}
  P2: {first_response: 6s, resolution: 1h}
  P3: {first_response: 6s, resolution: 1h}
  P4: {first_response: 6s, resolution: 1h}
"""


async def test_a_countdown_turns_red_at_breach(browser: Browser, served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    await served.rt.sla.publish(SECONDS_POLICY, "admin")
    async with logged_in(browser, served, "ann") as page:
        # Opened after the login, so that the six seconds are not spent logging in.
        cid = await served.route("my deposit is missing since Monday", user="payer")
        opened = (await served.rt.conversations.get(cid)).created_ms
        await page.goto(f"{served.url}/conversations/{cid}")
        first = page.locator("#sla li.countdown[data-target=first_response]")
        resolution = page.locator("#sla li.countdown[data-target=resolution]")
        await expect(first).to_have_attribute("data-deadline-ms", str(opened + 6000))
        if time.time() * 1000 < opened + 5000:  # a loaded machine may have used the seconds up
            await expect(first).not_to_have_class(re.compile(r"\bbreached\b"))
            await expect(first.locator(".countdown-value")).to_contain_text("left")
        await shot(page, "sla-countdown")
        await expect(first).to_have_class(re.compile(r"\bbreached\b"), timeout=10_000)
        await expect(first.locator(".countdown-value")).to_contain_text("overdue")
        await expect(resolution).not_to_have_class(re.compile(r"\bbreached\b"))
        await expect(resolution.locator(".countdown-value")).to_contain_text("left")
        await shot(page, "sla-breached")
