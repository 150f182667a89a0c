"""The knowledge base in Chromium: an agent sees the suggested articles in the conversation's
language and inserts one into the reply; an admin edits an article and publishes it, and the
suggestions, made by the answerer inside this console process, use the new version without a
restart."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.console.conftest import Served
from tests.console.test_browser import browser, logged_in, shot
from tests.console.test_kb import rules_file, settings

__all__ = ["browser", "rules_file", "settings"]  # the fixtures this module uses from its neighbours

NEW_SENTENCE = "新规定：TRC20 提现 5 分钟内到账。"


async def test_agent_inserts_a_suggestion_and_an_admin_publishes_an_edit(browser: Browser, served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    cid = await served.route("我的提现要多久才到账？", user="wang")
    async with logged_in(browser, served, "ann") as agent:
        await agent.goto(f"{served.url}/conversations/{cid}")
        first = agent.locator("#suggestions .suggestion").first
        await expect(first).to_have_attribute("data-article", "withdrawal-times")
        await expect(first).to_have_attribute("data-lang", "zh")  # the user's language, not English
        await expect(agent.locator("#suggestions .suggestion")).to_have_count(3)
        await shot(agent, "kb-suggestions")
        await first.locator("button", has_text="Insert").click()
        inserted = await agent.input_value("#reply-text")
        assert inserted.startswith("提现通常几分钟内到账") and inserted.endswith("附上交易哈希。"), inserted
        # Editable: the agent adds a line before sending.
        await agent.fill("#reply-text", inserted + "\n如有问题请回复。")
        await agent.click("text=Send reply")
        await expect(agent.locator(".flash-ok")).to_contain_text("Reply queued")
        await expect(agent.locator(".timeline .msg-out")).to_contain_text("如有问题请回复。")

        async with logged_in(browser, served, "admin") as admin:
            await admin.goto(f"{served.url}/admin/kb")
            row = admin.locator("tr[data-article=withdrawal-times]")
            await row.locator("a.chip", has_text="zh").click()
            await expect(admin.locator("h1")).to_have_text("withdrawal-times/zh.md")
            text = await admin.input_value("#article-text")
            # A mistake first: the problem is shown, nothing is published.
            await admin.fill("#article-text", text.replace("auto: true", "auto: yes please"))
            await admin.click("button[value=validate]")
            await expect(admin.locator("#errors")).to_contain_text("withdrawal-times/zh.md: auto must be true or false")
            await expect(admin.locator("#validation-state")).to_contain_text("1 problem(s)")
            await admin.fill("#article-text", text.rstrip("\n") + "\n\n" + NEW_SENTENCE + "\n")
            await admin.click("button[value=validate]")
            await expect(admin.locator("#validation-state")).to_contain_text("valid")
            await shot(admin, "kb-editor")
            await admin.fill("input[name=comment]", "TRC20 faster")
            await admin.click("button[value=publish]")
            await expect(admin).to_have_url(served.url + "/admin/kb/history")
            await expect(admin.locator("tr.current")).to_contain_text("TRC20 faster")
            await shot(admin, "kb-history")

        # The same console process, no restart: the next look at the conversation suggests the
        # published version's text.
        await agent.reload()
        await expect(agent.locator("#suggestions .suggestion").first).to_contain_text(NEW_SENTENCE)
        await agent.locator("#suggestions .suggestion").first.locator("button", has_text="Insert").click()
        assert NEW_SENTENCE in await agent.input_value("#reply-text")
    number, answerer = await served.rt.kb.answerer()
    assert number == 1 and NEW_SENTENCE in answerer.kb.get("withdrawal-times").variants["zh"].body
