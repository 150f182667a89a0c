"""Sessions and credentials under attack (issue 13): parallel guessing, revocation, one-time
passwords, token scopes and expiry, the audit log. Against uvicorn and Redis (conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from router.config import Settings

from .conftest import PASSWORD, Served

NEW_PASSWORD = "violet tram orbit cascade"


@contextlib.asynccontextmanager
async def closing(*clients: httpx.AsyncClient) -> AsyncIterator[None]:
    """Close clients that were already used (``async with`` refuses to open them again)."""
    try:
        yield
    finally:
        for c in clients:
            await c.aclose()


async def _login_form(url: str, forwarded_for: str | None = None) -> tuple[httpx.AsyncClient, str]:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    client = httpx.AsyncClient(base_url=url, timeout=60, headers=headers)
    page = await client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    return client, token.group(1)


async def _login(url: str, name: str, password: str, forwarded_for: str | None = None) -> httpx.Response:
    client, csrf = await _login_form(url, forwarded_for)
    async with closing(client):
        return await client.post("/login", data={"name": name, "password": password, "csrf": csrf})


async def test_parallel_guesses_check_no_more_passwords_than_the_limit(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    forms = await asyncio.gather(*(_login_form(served.url) for _ in range(40)))
    try:
        posts = [
            c.post("/login", data={"name": "ann", "password": f"guess {i}", "csrf": t})
            for i, (c, t) in enumerate(forms)
        ]
        answers = await asyncio.gather(*posts)
    finally:
        for c, _ in forms:
            await c.aclose()
    statuses = Counter(r.status_code for r in answers)
    # login_max_failures = 3 in these tests: at most 3 passwords are checked (401), the rest refused.
    assert statuses[401] <= 3 and statuses[429] >= 37, statuses
    # ... and the right password from the same address is refused too, until the window ends.
    assert (await _login(served.url, "ann", PASSWORD)).status_code == 429


async def test_a_flood_of_logins_gets_no_server_error(served: Served) -> None:
    forms = await asyncio.gather(*(_login_form(served.url) for _ in range(200)))
    try:
        posts = [
            c.post("/login", data={"name": f"u{i % 7}", "password": "x" * 12, "csrf": t})
            for i, (c, t) in enumerate(forms)
        ]
        answers = await asyncio.gather(*posts)
    finally:
        for c, _ in forms:
            await c.aclose()
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {401, 429}, statuses


@pytest.fixture
def behind_proxy(web_settings: Settings) -> Settings:
    web = web_settings.web.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    return web_settings.model_copy(update={"web": web})


async def test_someone_elses_failures_slow_the_account_down_but_do_not_lock_it(served: Served) -> None:
    served.console.web.trusted_proxies.append("127.0.0.1")  # the test client plays the proxy
    await served.user("ann", "agent", ("payments",))
    for _ in range(3):
        assert (await _login(served.url, "ann", "wrong", forwarded_for="203.0.113.9")).status_code == 401
    # The attacker's address is blocked now ...
    assert (await _login(served.url, "ann", "wrong", forwarded_for="203.0.113.9")).status_code == 429
    # ... but ann, from her own address, still gets in (the account is slowed down, not locked).
    assert (await _login(served.url, "ann", PASSWORD, forwarded_for="198.51.100.7")).status_code == 303


async def test_forwarded_for_is_ignored_without_a_trusted_proxy(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    answers = [await _login(served.url, "ann", "wrong", forwarded_for=f"10.0.0.{i}") for i in range(5)]
    # Rotating the header does not make new addresses: the pair (ann, 127.0.0.1) hits its limit.
    assert [r.status_code for r in answers] == [401, 401, 401, 429, 429]


async def test_the_password_form_is_rate_limited_too(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    client, csrf = await served.browser_session("ann")
    async with closing(client):
        codes = []
        for i in range(5):
            r = await client.post(
                "/api/me/password", json={"current": f"guess {i}", "new": NEW_PASSWORD}, headers={"x-csrf-token": csrf}
            )
            codes.append(r.status_code)
    assert codes[:2] == [400, 400] and codes[-1] == 429, codes


async def test_a_password_change_ends_every_other_session_and_the_token(served: Served) -> None:
    token = await served.user("ann", "agent", ("payments",))
    attacker, _ = await served.browser_session("ann")
    owner, csrf = await served.browser_session("ann")
    async with closing(attacker, owner), served.api(token) as script:
        assert (await attacker.get("/api/me")).status_code == 200
        r = await owner.post(
            "/api/me/password", json={"current": PASSWORD, "new": NEW_PASSWORD}, headers={"x-csrf-token": csrf}
        )
        assert r.status_code == 200, r.text
        assert (await attacker.get("/api/me")).status_code == 401
        assert (await script.get("/api/me")).status_code == 401
        # The owner's browser got a fresh session with the change.
        assert (await owner.get("/api/me")).status_code == 200


async def test_a_reset_by_an_admin_ends_the_users_sessions(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    admin_token = await served.console.users.issue_token("admin")
    ann, _ = await served.browser_session("ann")
    async with closing(ann), served.api(admin_token) as admin:
        r = await admin.patch("/api/users/ann", json={"password": "temporary password 1"})
        assert r.status_code == 200, r.text
        assert (await ann.get("/api/me")).status_code == 401


async def test_a_deleted_and_recreated_name_does_not_inherit_sessions(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    admin_token = await served.console.users.issue_token("admin")
    old, _ = await served.browser_session("ann")
    async with closing(old), served.api(admin_token) as admin:
        assert (await admin.delete("/api/users/ann")).status_code == 200
        await served.console.users.add("ann", "admin", (), PASSWORD, must_change=False)
        r = await old.get("/api/me")
        assert r.status_code == 401, r.text


async def test_a_role_change_ends_sessions(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    session, _ = await served.browser_session("ann")
    async with closing(session):
        await served.console.users.update("ann", groups=["payments", "security"])
        assert (await session.get("/api/me")).status_code == 401


async def test_an_open_event_stream_ends_when_the_password_is_reset(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    ann, _ = await served.browser_session("ann")
    async with closing(ann), ann.stream("GET", "/api/events") as stream:
        assert stream.status_code == 200
        await served.console.users.set_password("ann", "temporary password 1", must_change=True)

        async def drain() -> None:
            async for _ in stream.aiter_bytes():
                pass

        await asyncio.wait_for(drain(), 20)  # re-checked every 5 s (sse.RECHECK_S)


async def test_one_time_passwords_expire_and_cannot_be_kept(served: Served) -> None:
    users = served.console.users
    one_time = await users.add("bob", "agent", ("payments",))
    client, csrf = await served.browser_session("bob", one_time)
    async with closing(client):
        r = await client.post(
            "/api/me/password", json={"current": one_time, "new": one_time}, headers={"x-csrf-token": csrf}
        )
        assert r.status_code == 400 and "not the current one" in r.text
        r = await client.post(
            "/api/me/password", json={"current": one_time, "new": "password123"}, headers={"x-csrf-token": csrf}
        )
        assert r.status_code == 400 and "too easy to guess" in r.text
    start = users.clock()
    users.clock = lambda: start + served.console.web.otp_ttl_s + 1
    try:
        r = await _login(served.url, "bob", one_time)
        assert r.status_code == 401 and "expired" in r.text
    finally:
        users.clock = lambda: start


async def test_token_scopes_and_expiry(served: Served) -> None:
    await served.user("ann", "agent", ("payments",))
    admin_token = await served.console.users.issue_token("admin")
    async with served.api(admin_token) as admin:
        r = await admin.post("/api/users/ann/token", json={"scope": "read", "ttl_days": 1})
        assert r.status_code == 201
        read_only = r.json()["token"]
    cid = await served.route("my withdrawal has not arrived", user="carol")
    async with served.api(read_only) as ann:
        assert (await ann.get("/api/me")).status_code == 200
        r = await ann.post(f"/api/conversations/{cid}/close")
        assert r.status_code == 403 and "scope read" in r.text
    users = served.console.users
    start = users.clock()
    users.clock = lambda: start + 86400 + 1
    try:
        async with served.api(read_only) as ann:
            assert (await ann.get("/api/me")).status_code == 401
    finally:
        users.clock = lambda: start


async def test_the_audit_log_records_logins_failures_and_user_changes(served: Served) -> None:
    admin_token = await served.console.users.issue_token("admin")
    await served.user("ann", "agent", ("payments",))
    assert (await _login(served.url, "ann", "wrong")).status_code == 401
    assert (await _login(served.url, "ann", PASSWORD)).status_code == 303
    async with served.api(admin_token) as admin:
        assert (await admin.post("/api/users", json={"name": "dora", "groups": ["kyc"]})).status_code == 201
        assert (await admin.delete("/api/users/dora/token")).status_code == 200
        entries = (await admin.get("/api/audit")).json()
    seen = [(e["action"], e["actor"], e["target"], e["ok"]) for e in reversed(entries)]
    assert seen == [
        ("login", "ann", "", False),
        ("login", "ann", "", True),
        ("user.add", "admin", "dora", True),
        ("token.revoke", "admin", "dora", True),
    ], seen
    assert all(e["ip"] == "127.0.0.1" for e in entries)
    ann_token = await served.console.users.issue_token("ann")
    async with served.api(ann_token) as ann:
        assert (await ann.get("/api/audit")).status_code == 403
