"""E-mail button links through the console's real HTTP server: a valid link asks for a confirmation
and records the press once on POST; an expired one is 410, a tampered one 400, neither recorded."""

from __future__ import annotations

import base64
import json
import time

import httpx

from router.config import WebSettings
from router.links import PressLinks
from router.runtime import Runtime
from tests.console.conftest import Served
from tests.router.helpers import presses

PUBLIC = "https://support.example.test"
LABEL = "✅ This solved it"


async def _adapter_links(rt: Runtime, served: Served) -> PressLinks:
    """The signer the e-mail adapter gets from its context (same deployment: same secret)."""
    web = WebSettings.model_validate({**served.console.web.model_dump(), "public_url": PUBLIC + "/"})
    ctx = rt.channel_context("mailer", web=web)
    links = await ctx.press_links()
    assert links is not None
    return links


async def test_a_link_asks_first_and_records_the_press_once_on_confirmation(rt: Runtime, served: Served) -> None:
    links = await _adapter_links(rt, served)
    url = links.url("email", "support", "<root@customer.test>", "kb:42:solved", LABEL, "R1.0")
    assert url.startswith(f"{PUBLIC}/a/1.")  # the trailing slash of the setting is not doubled
    path = url.removeprefix(PUBLIC)
    async with httpx.AsyncClient(base_url=served.url) as http:
        page = await http.get(path)
        assert page.status_code == 200 and LABEL in page.text and 'method="post"' in page.text
        assert page.headers["cache-control"] == "no-store"
        # A mail scanner that opens every link records nothing.
        assert await presses(rt) == []

        done = await http.post(path)
        assert done.status_code == 200 and "Thank you" in done.text
        again = await http.post(path)  # a second click, or the link in a copy of the mail
        assert again.status_code == 200
    [pressed] = await presses(rt)
    press = pressed.press
    assert (press.id, press.channel, press.account) == ("R1.0", "email", "support")
    assert (press.conversation_key, press.data, press.user) == ("<root@customer.test>", "kb:42:solved", "link")


async def test_an_expired_link_is_410_and_records_nothing(rt: Runtime, served: Served) -> None:
    links = await _adapter_links(rt, served)
    path = "/a/" + links.token("email", "support", "<root@customer.test>", "kb:42:solved", LABEL, "R2.0")
    served.console.office.links.clock = lambda: time.time() + links.ttl_s + 1
    async with httpx.AsyncClient(base_url=served.url) as http:
        for method in ("GET", "POST"):
            page = await http.request(method, path)
            assert page.status_code == 410 and "expired" in page.text
    served.console.office.links.clock = lambda: time.time() + links.ttl_s - 5  # just inside: still valid
    async with httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get(path)).status_code == 200
    assert await presses(rt) == []


async def test_a_tampered_link_is_400_and_records_nothing(rt: Runtime, served: Served) -> None:
    links = await _adapter_links(rt, served)
    token = links.token("email", "support", "<root@customer.test>", "kb:42:solved", LABEL, "R3.0")
    version, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[3] = "kb:42:human"  # another answer, under the original signature
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    other_key = PressLinks(b"not this deployment's secret", PUBLIC, 3600)
    foreign = other_key.token("email", "support", "<root@customer.test>", "kb:42:solved", LABEL, "R3.1")
    async with httpx.AsyncClient(base_url=served.url) as http:
        for bad in (f"{version}.{forged}.{signature}", f"{version}.{body}.{flipped}", foreign, "garbage", "2.x.y"):
            for method in ("GET", "POST"):
                page = await http.request(method, f"/a/{bad}")
                assert page.status_code == 400, (bad, method)
                assert "not valid" in page.text
    assert await presses(rt) == []
