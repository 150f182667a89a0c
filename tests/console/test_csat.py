"""Satisfaction surveys by e-mail and in the console: the survey's five buttons as the e-mail
adapter signs them, opened through the console's real HTTP server (valid: the rating is recorded
once; expired: 410; tampered: 400, nothing recorded), the rating and the comment in the
conversation's timeline, and the ``/metrics`` families."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from adapters.email.smtp import button_links
from router.config import Settings, WebSettings
from router.csat import CsatService, parse_button
from router.links import PressLinks
from router.model import decode_outbox
from router.runtime import Runtime
from router.worker import Worker
from tests.console.conftest import Served
from tests.router.helpers import drain, message
from tests.router.test_csat import MIN, closed_by_agent, csat_entries, csat_on, now_clock

PUBLIC = "https://support.example.test"
ROOT = "<root@customer.test>"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return csat_on(settings)


async def _mailed_survey(served: Served) -> tuple[str, list[tuple[str, str]], CsatService]:
    """An e-mail conversation closed by an agent and surveyed; (conversation, the survey's links
    (label, url) as the e-mail adapter puts them in the mail, the survey service)."""
    rt = served.rt
    clock = now_clock()
    surveys = CsatService(rt, owner="A", clock=clock, block_ms=20)
    await surveys._presses.start()
    meta = {"message_id": ROOT, "from": "alice@customer.test", "subject": "Deposit"}
    cid = await served.route("hello, my deposit is missing", user="alice@customer.test", channel="email",
                             key=ROOT, account="support", meta=meta)  # fmt: skip
    await closed_by_agent(rt, clock, cid)
    clock.now += 10 * MIN
    assert await surveys.tick() == 1
    entries = await rt.client.xrange(rt.shards.conv_keys(cid).outbox("email"))
    [item] = [i for i in (decode_outbox(f[b"item"]) for _, f in entries) if i.author == "csat"]
    assert (item.channel, item.account, item.conversation_key) == ("email", "support", ROOT)
    web = WebSettings.model_validate({**served.console.web.model_dump(), "public_url": PUBLIC})
    links = await rt.channel_context("mailer", web=web).press_links()
    assert links is not None
    return cid, button_links(item, links), surveys


async def _ratings(rt: Runtime, cid: str) -> list[int]:
    return [e["rating"] for e in csat_entries(await rt.conversations.history(cid))]


async def test_a_valid_link_rates_once_and_the_timeline_shows_it(served: Served) -> None:
    rt = served.rt
    cid, links, surveys = await _mailed_survey(served)
    assert [label for label, _ in links] == ["1", "2", "3", "4", "5"]
    path = links[1][1].removeprefix(PUBLIC)  # "2"
    async with httpx.AsyncClient(base_url=served.url) as http:
        page = await http.get(path)
        assert page.status_code == 200 and 'method="post"' in page.text
        await surveys.press_step()
        assert await _ratings(rt, cid) == []  # opening the link (a mail scanner) rates nothing
        assert (await http.post(path)).status_code == 200
        assert (await http.post(path)).status_code == 200  # clicked twice: one press
        assert (await http.post(links[4][1].removeprefix(PUBLIC))).status_code == 200  # then "5": too late
    await surveys.press_step()
    await surveys.press_step()
    assert await _ratings(rt, cid) == [2]
    assert surveys.counts["late"] == 1

    # A low rating asked why; the user's reply in the thread is the comment.
    env = message("the agent sent me the wrong form twice", user="alice@customer.test", channel="email",
                  key=ROOT, account="support")  # fmt: skip
    await rt.inbox.append(env)
    await drain(Worker(rt))
    assert (await rt.conversations.get(cid)).status == "closed"

    admin, _ = await served.browser_session("admin")
    timeline = (await admin.get(f"/conversations/{cid}")).text
    await admin.aclose()
    assert "Satisfaction survey" in timeline
    assert 'the user rated <strong class="csat-rating">2/5</strong>' in timeline and "(agent ann)" in timeline
    assert 'satisfaction comment (2/5): <q class="csat-comment">the agent sent me the wrong form twice</q>' in timeline
    async with served.api() as anon:
        metrics = (await anon.get("/metrics")).text
    assert 'switchboard_csat_ratings_total{group="payments",rating="2"} 1.0' in metrics
    assert 'switchboard_csat_surveys_total{outcome="sent"} 1.0' in metrics
    assert 'switchboard_csat_surveys_total{outcome="comments"} 1.0' in metrics
    stats = (await rt.stats.read())["csat"]
    assert (stats["rated"], stats["average"], stats["satisfied"], stats["by_agent"]) == (1, 2.0, 0.0, {"ann": {"2": 1}})


async def test_an_expired_link_is_410_and_rates_nothing(served: Served) -> None:
    cid, links, surveys = await _mailed_survey(served)
    links_ttl = served.console.web.link_ttl_s
    served.console.office.links.clock = lambda: time.time() + links_ttl + 1
    path = links[4][1].removeprefix(PUBLIC)
    async with httpx.AsyncClient(base_url=served.url) as http:
        for method in ("GET", "POST"):
            page = await http.request(method, path)
            assert page.status_code == 410 and "expired" in page.text
    await surveys.press_step()
    assert await _ratings(served.rt, cid) == []


async def test_a_tampered_link_is_400_and_rates_nothing(served: Served) -> None:
    cid, links, surveys = await _mailed_survey(served)
    token = links[4][1].rsplit("/", 1)[1]  # "5"
    version, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    parsed = parse_button(payload[3])
    assert parsed is not None and parsed[2] == 5
    payload[3] = payload[3][:-1] + "1"  # a 1 instead, under the original signature
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    foreign = PressLinks(b"another deployment", PUBLIC, 3600).token(
        "email", "support", ROOT, payload[3], "1", "X.0"
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=served.url) as http:
        for bad in (f"{version}.{forged}.{signature}", f"{version}.{body}.{flipped}", foreign):
            for method in ("GET", "POST"):
                page = await http.request(method, f"/a/{bad}")
                assert page.status_code == 400, (bad, method)
    await surveys.press_step()
    assert await _ratings(served.rt, cid) == []
