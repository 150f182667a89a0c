"""Sandbox buttons: shown under the reply in the simulator, pressed there (a form) or through the
API, each press recorded once in the reply's conversation; a wrong button is a clear 400."""

from __future__ import annotations

import re

from adapters.sandbox import SandboxAdapter
from router.lifecycle import running
from router.model import Button
from router.worker import Worker
from tests.console.conftest import Served, eventually
from tests.router.helpers import drain, presses

SOLVED = Button(label="✅ This solved it", data="kb:42:solved")
HUMAN = Button(label="🙋 Talk to a person", data="kb:42:human")


async def _reply_with_buttons(served: Served, user: str) -> str:
    """``user`` writes, the message is routed, a reply with two buttons is delivered; its id."""
    rt = served.rt
    await served.console.sandbox_send(user, "how long does a withdrawal take?")
    await drain(Worker(rt))
    raw = await rt.client.get(rt.keys.conv_key("sandbox", "default", user))
    assert raw is not None
    reply = await rt.conversations.reply(raw.decode(), "10-30 minutes.", "kb", buttons=[SOLVED, HUMAN])

    async def delivered() -> bool:
        return any(r["id"] == reply for r in await served.console.sandbox_inbox(user))

    async with running([SandboxAdapter(rt.channel_context())]):
        await eventually(delivered, 10)
    return reply


async def test_the_simulator_shows_the_buttons_and_a_click_is_a_press(served: Served) -> None:
    reply = await _reply_with_buttons(served, "alice")
    await served.user("root", "admin")
    http, _ = await served.browser_session("root")
    try:
        page = await http.get("/sandbox/replies?user=alice")
        forms = re.findall(r'<form method="post" action="/sandbox/press".*?</form>', page.text, re.S)
        assert len(forms) == 2 and SOLVED.label in forms[0] and HUMAN.label in forms[1]
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', forms[1]))
        assert (fields["user"], fields["reply"], fields["button"]) == ("alice", reply, "2")

        for _ in range(2):  # a double click is one press
            clicked = await http.post("/sandbox/press", data=fields)
            assert clicked.status_code == 303 and clicked.headers["location"] == "/sandbox?user=alice"
        no_csrf = await http.post("/sandbox/press", data={k: v for k, v in fields.items() if k != "csrf"})
        assert no_csrf.status_code == 403
    finally:
        await http.aclose()
    [pressed] = await presses(served.rt)
    press = pressed.press
    assert (press.id, press.channel, press.account) == (f"{reply}.2", "sandbox", "default")
    assert (press.conversation_key, press.user, press.data) == ("alice", "alice", HUMAN.data)


async def test_the_api_presses_the_latest_reply_with_buttons_and_refuses_a_wrong_one(served: Served) -> None:
    reply = await _reply_with_buttons(served, "bob")
    token = await served.user("root", "admin")
    async with served.api(token) as api:
        pressed = await api.post("/api/sandbox/presses", json={"user": "bob", "button": 1})
        assert pressed.status_code == 202 and pressed.json() == {"pressed": SOLVED.label}
        wrong = await api.post("/api/sandbox/presses", json={"user": "bob", "button": 3})
        assert wrong.status_code == 400
        assert wrong.json()["error"] == f"reply {reply} has 2 button(s), not a button 3"
        nobody = await api.post("/api/sandbox/presses", json={"user": "carol", "button": 1})
        assert nobody.status_code == 404 and "no reply with buttons" in nobody.json()["error"]
    [recorded] = await presses(served.rt)
    assert (recorded.press.id, recorded.press.data) == (f"{reply}.1", SOLVED.data)
