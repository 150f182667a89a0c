"""The JSON API's seams on FastAPI: errors (BadRequest 400, a bug 500, an invalid body 422 in the
console's shape, a form 415), admin-only declared once per endpoint, OpenAPI generated from the
handlers, and the sandbox simulator switched off when no sandbox is passed in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from router.config import Settings
from router.console import ConsoleServer, api, create_app
from router.console.api import Admin
from router.errors import BadRequest
from router.runtime import Runtime
from tests.console.conftest import Served


async def test_bad_request_is_400_and_a_bug_is_500(served: Served) -> None:
    app = served.server.app
    assert isinstance(app, FastAPI)

    async def bad_input() -> None:
        raise BadRequest("that is not a group")

    async def bug() -> None:
        raise ValueError("an internal slip")

    app.add_api_route("/api/test/bad-input", bad_input)
    app.add_api_route("/api/test/bug", bug)
    async with served.api() as anon:
        bad = await anon.get("/api/test/bad-input")
        assert (bad.status_code, bad.json()) == (400, {"error": "that is not a group"})
        broken = await anon.get("/api/test/bug")
        assert (broken.status_code, broken.json()) == (500, {"error": "internal error"})


async def test_an_invalid_body_keeps_the_console_error_shape(served: Served) -> None:
    token = await served.user("ann", "agent", ("payments",))
    cid = await served.route("my deposit is missing")
    async with served.api(token) as api:
        r = await api.post(f"/api/conversations/{cid}/reply", json={"text": "", "extra": 1})
        assert r.status_code == 422
        body = r.json()
        assert body["error"] == "invalid request body"
        assert {(tuple(d["loc"]), d["type"]) for d in body["details"]} == {
            (("text",), "string_too_short"),
            (("extra",), "extra_forbidden"),
        }
        form = await api.post(f"/api/conversations/{cid}/note", data={"text": "x"})
        assert form.status_code == 415 and "application/json" in form.json()["error"]
        # A body that every field may leave out can be left out.
        assert (await api.post("/api/groups/payments/claim")).status_code == 200


def test_admin_only_is_declared_once_and_shown_in_the_openapi_document(rt: Runtime, web_settings: Settings) -> None:
    app = create_app(rt, web_settings)
    spec = app.openapi()
    admin_dep = Admin.__metadata__[0].dependency
    admin_only = set()
    for route in api.router.routes:
        if isinstance(route, APIRoute):
            calls = {d.call for d in route.dependant.dependencies}
            if admin_dep in calls:
                admin_only |= {(m, route.path_format) for m in route.methods}
    assert ("POST", "/api/rules/publish") in admin_only
    assert ("GET", "/api/stats") in admin_only
    assert ("POST", "/api/conversations/{conv_id}/reply") not in admin_only
    # As many as the hand-written registry declared admin=True, + GET /api/models, + POST
    # /api/sandbox/presses, + GET /api/agents and PATCH /api/agents/{name}.
    assert {("GET", "/api/agents"), ("PATCH", "/api/agents/{name}")} <= admin_only
    assert len(admin_only) == 25
    assert "/api/rules/versions/{number}" in spec["paths"]
    assert {"HTTPBearer", "APIKeyCookie"} <= set(spec["components"]["securitySchemes"])


@pytest.fixture
async def no_sandbox(rt: Runtime, web_settings: Settings) -> AsyncIterator[ConsoleServer]:
    server = ConsoleServer(create_app(rt, web_settings), "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_without_a_sandbox_the_simulator_answers_404(no_sandbox: ConsoleServer) -> None:
    console = no_sandbox.app.state.console
    await console.users.add("root", "admin", (), "correct horse battery", must_change=False)
    token = await console.users.issue_token("root")
    async with httpx.AsyncClient(base_url=no_sandbox.url, headers={"Authorization": f"Bearer {token}"}) as api:
        sent = await api.post("/api/sandbox/messages", json={"user": "alice", "text": "hello"})
        assert sent.status_code == 404 and "sandbox is off" in sent.json()["error"]
        assert (await api.get("/api/sandbox/alice/inbox")).status_code == 404
