"""The knowledge-base answers in the console: the admin's answers page (figures and shadow rows),
the answer and its buttons in the conversation's timeline, and the ``/metrics`` families."""

from __future__ import annotations

from tests.console.conftest import Served
from tests.router.test_answerer import FAQ, answerer


async def test_the_answers_page_timeline_and_metrics(served: Served) -> None:
    rt = served.rt
    live = await answerer(rt)
    cid = await served.route(FAQ, user="alice", channel="sandbox")
    await live.step()
    shadow = await answerer(rt, mode="shadow", consumer="s")
    other = await served.route(FAQ, user="bob", channel="sandbox")
    await shadow.step()
    assert live.counts["sent"] == 1 and shadow.counts["shadow"] == 1

    admin, _ = await served.browser_session("admin")
    page = (await admin.get("/admin/answers")).text
    assert "<td>1</td><td>1</td><td>100%</td>" in page  # eligible, answered, rate
    assert f'href="/conversations/{other}"' in page and "password-reset" in page
    dashboard = (await admin.get("/admin/dashboard")).text
    assert "1 answered of 1 eligible (100%): 0 confirmed" in dashboard and "would answer 1 of 1" in dashboard
    timeline = (await admin.get(f"/conversations/{cid}")).text
    assert "Knowledge-base answer" in timeline
    assert "answered from the knowledge base: <strong>password-reset</strong> (en)" in timeline
    assert "[This solved it] [Talk to a person]" in timeline
    await admin.aclose()
    await served.user("agent1", "agent", ("general",))
    agent, _ = await served.browser_session("agent1")
    assert (await agent.get("/admin/answers")).status_code == 403
    await agent.aclose()

    async with served.api() as anon:
        metrics = (await anon.get("/metrics")).text
    assert 'switchboard_kb_answers_total{outcome="answered"} 1.0' in metrics
    assert 'switchboard_kb_answers_by_article_total{article="password-reset",outcome="answered"} 1.0' in metrics
    assert "switchboard_kb_auto_answer_ratio 1.0" in metrics
    assert 'switchboard_kb_shadow_would_answer_total{article="password-reset"} 1.0' in metrics
