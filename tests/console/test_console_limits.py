"""Issue 13, findings 9 and 10 and the low ones, against the real server: the console's own Redis
pool that waits, /metrics behind a token and cached, streams per user, drafts compiled in a
limited child process, no-store, bidi controls neutralised, 415 for a form sent to a JSON endpoint.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re

import httpx
import pytest
from pydantic import SecretStr

from router.config import Settings
from router.runtime import Runtime
from tests.console.conftest import Served, serving
from tests.rules.test_limits import alias_bomb

METRICS_TOKEN = "scrape-me-please"


@pytest.fixture
def web_settings(web_settings: Settings) -> Settings:
    web = web_settings.web.model_copy(update={"redis_connections": 4, "redis_wait_s": 30.0, "max_streams_per_user": 2})
    return web_settings.model_copy(update={"web": web})


async def parallel(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [r.status_code for r in await asyncio.gather(*(client.get(path) for _ in range(n)))]


def many(served: Served, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    return httpx.AsyncClient(base_url=served.url, headers=headers, timeout=60, limits=limits)


async def test_a_burst_of_api_calls_waits_for_the_consoles_pool_instead_of_failing(served: Served) -> None:
    token = await served.user("ann", "admin")
    async with many(served, token) as client:
        codes = await parallel(client, "/api/stats", 150)
    assert codes == [200] * 150, sorted(set(codes))


async def test_200_parallel_scrapes_answer_200(served: Served) -> None:
    async with many(served) as client:
        codes = await parallel(client, "/metrics", 200)
    assert codes == [200] * 200, sorted(set(codes))


async def test_500_parallel_event_streams_get_no_500(served: Served) -> None:
    tokens = [await served.user(f"agent{i}", "admin") for i in range(60)]
    codes: list[int] = []

    async def open_one(token: str) -> None:
        async with many(served, token) as client, client.stream("GET", "/api/events") as response:
            codes.append(response.status_code)

    await asyncio.gather(*(open_one(tokens[i % len(tokens)]) for i in range(500)))
    assert 500 not in codes and set(codes) <= {200, 429, 503}, sorted(set(codes))


async def test_a_request_that_gets_no_connection_in_time_is_503_with_retry_after(
    rt: Runtime, web_settings: Settings
) -> None:
    """Every connection of the console's pool is taken (here by the test itself): a request waits
    web.redis_wait_s, then is told to come back, never 500. The pool is the console's settings'."""
    web = web_settings.web.model_copy(update={"redis_connections": 2, "redis_wait_s": 0.3})
    async with serving(rt, web_settings.model_copy(update={"web": web})) as served:
        token = await served.user("ann", "admin")
        pool = served.console.office._rt.client.connection_pool  # the console's own pool
        assert pool.max_connections == 2
        held = [await pool.get_connection() for _ in range(2)]
        try:
            async with served.api(token) as client:
                busy = await client.get("/api/stats")
        finally:
            for connection in held:
                await pool.release(connection)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5", busy.text
        assert "did not answer in time" in busy.json()["error"]
        async with served.api(token) as client:
            assert (await client.get("/api/stats")).status_code == 200


async def test_one_user_cannot_take_every_stream(served: Served) -> None:
    token = await served.user("greedy", "admin")
    async with many(served, token) as client:
        async with client.stream("GET", "/api/events") as one, client.stream("GET", "/api/events") as two:
            assert (one.status_code, two.status_code) == (200, 200)
            third = await client.get("/api/events")
            assert third.status_code == 429, third.text
        other = await served.user("other", "admin")
        async with many(served, other) as mine, mine.stream("GET", "/api/events") as response:
            assert response.status_code == 200


async def test_metrics_token(rt: object, web_settings: Settings) -> None:
    from router.console import ConsoleServer, create_app

    web = web_settings.web.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    app = create_app(rt, web_settings.model_copy(update={"web": web}))  # type: ignore[arg-type]
    server = ConsoleServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/metrics")).status_code == 401
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert right.status_code == 200 and "switchboard_queue_depth" in right.text
    finally:
        await server.close()


async def test_an_alias_bomb_draft_is_refused_with_the_reason(served: Served) -> None:
    token = await served.user("ann", "admin")
    async with served.api(token) as client:
        response = await client.post("/api/rules/validate", json={"source": alias_bomb(9)})
        assert response.status_code == 200
        got = response.json()
        assert got["valid"] is False and "YAML aliases expand" in got["errors"][0]["reason"]
        publish = await client.post("/api/rules/publish", json={"source": alias_bomb(9)})
        assert publish.status_code == 422 and "YAML aliases expand" in publish.text
        assert (await client.get("/healthz")).status_code == 200


async def test_a_draft_over_the_memory_limit_is_refused_and_the_console_stays_up(
    served: Served, web_settings: Settings
) -> None:
    # The loader's limits refuse every hostile draft we know of; this shows the backstop for the
    # ones we do not: the child process that runs out of its address space refuses the draft.
    # Usually a MemoryError; with the compiled engine the child was also seen to crash (CI:
    # SIGSEGV) or to loop until the time limit (the allocation that does it was not found). Every
    # way, the draft is refused with the limit named and the console runs on.
    served.console.web = served.console.web.model_copy(update={"draft_memory_mb": 64, "draft_timeout_s": 3.0})
    token = await served.user("ann", "admin")
    async with served.api(token) as client:
        source = (importlib.resources.files("rules") / "default.yaml").read_text(encoding="utf-8")
        got = (await client.post("/api/rules/validate", json={"source": source})).json()
        reason = got["errors"][0]["reason"]
        assert got["valid"] is False, got
        assert re.search(r"needs more than 64 MB|within the limits \(64 MB\)|longer than 3 s", reason), got
        assert (await client.get("/healthz")).status_code == 200


async def test_pages_and_api_are_no_store_static_files_are_not(served: Served) -> None:
    client, _ = await served.browser_session("admin")
    try:
        for path in ("/api/me", "/queues", "/admin/users"):
            assert (await client.get(path)).headers.get("cache-control") == "no-store", path
        assert (await client.get("/static/app.css")).headers.get("cache-control") != "no-store"
    finally:
        await client.aclose()


async def test_bidi_controls_in_a_message_are_shown_not_applied(served: Served) -> None:
    cid = await served.route("please open invoice\u202efdp.exe and \u2066this\u2069", user="mallory")
    client, _ = await served.browser_session("admin")
    page = (await client.get(f"/conversations/{cid}")).text
    await client.aclose()
    assert "invoice[U+202E]fdp.exe" in page and "[U+2066]this[U+2069]" in page
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200e\u200f]", page)


async def test_a_form_post_to_a_json_endpoint_is_415(served: Served) -> None:
    cid = await served.route("my deposit is missing", user="payer")
    client, csrf = await served.browser_session("admin")
    response = await client.post(f"/api/conversations/{cid}/note", data={"text": "hello", "csrf": csrf})
    await client.aclose()
    assert response.status_code == 415, response.text
