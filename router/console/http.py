"""Request plumbing shared by views and API: who is asking, CSRF, cookies, security headers."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.accounts import CsrfError, Forbidden, Unauthorized, User
from router.errors import BadRequest

from .access import require_admin

if TYPE_CHECKING:
    from .service import Console

SESSION_COOKIE = "sb_session"
LOGIN_CSRF_COOKIE = "sb_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class PasswordChangeRequired(Forbidden):
    """The user logs in with a one-time password and must choose their own first."""


def console(request: Request) -> Console:
    c: Console = request.app.state.console
    return c


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def client_ip(request: Request) -> str:
    """The client's address: the peer, or behind ``web.trusted_proxies`` the forwarded one.

    X-Forwarded-For is read from the right: the last address that is not a trusted proxy is the
    first one no trusted party vouches for (anything left of it the client could have written).
    """
    peer = request.client.host if request.client else "unknown"
    trusted = console(request).web.trusted_proxies
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:64]
    return peer


def secure_request(request: Request) -> bool:
    return bool(console(request).web.secure_cookies) or request.url.scheme == "https"


async def authenticate(request: Request) -> User | None:
    """The user of a Bearer token or of the session cookie (cached on the request)."""
    if getattr(request.state, "auth_done", False):
        cached: User | None = request.state.user
        return cached
    c = console(request)
    user: User | None = None
    request.state.via = None
    request.state.csrf = ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        user = await c.users.by_token(auth[7:].strip())
        if user is not None:
            request.state.via = "token"
    elif sid := request.cookies.get(SESSION_COOKIE):
        found = await c.sessions.get(sid)
        if found is not None:
            session, user = found
            request.state.via = "session"
            request.state.csrf = session.csrf
    request.state.user = user
    request.state.auth_done = True
    return user


async def check_csrf(request: Request) -> None:
    """A cookie-authenticated state change must carry the session's token (header or form field).

    Token-authenticated calls are exempt: a browser never attaches a Bearer token by itself.
    """
    if request.method in SAFE_METHODS or request.state.via != "session":
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not sent or not hmac.compare_digest(sent, request.state.csrf):
        raise CsrfError("missing or wrong CSRF token: reload the page and try again")


async def require(request: Request, *, admin: bool = False, allow_must_change: bool = False) -> User:
    """The authenticated user, after the CSRF check and the role check; raises otherwise."""
    user = await authenticate(request)
    if user is None:
        raise Unauthorized("log in first")
    await check_csrf(request)
    if user.must_change and not allow_must_change:
        raise PasswordChangeRequired("choose your own password first (POST /password or /api/me/password)")
    if admin:
        require_admin(user)
    if request.state.via == "token":
        _check_scope(request, user, admin)
    return user


def _check_scope(request: Request, user: User, admin: bool) -> None:
    # A token's scope narrows what its user may do: read = look only; reply = an agent's work;
    # admin = everything the (admin) user may do.
    if user.scope == "read" and request.method not in SAFE_METHODS:
        raise Forbidden("this API token may only read (scope read)")
    if admin and user.scope != "admin":
        raise Forbidden(f"this API token's scope ({user.scope}) does not include admin actions")


async def change_own_password(request: Request, user: User, current: str, new: str, confirm: str | None = None) -> None:
    """Check the current password (through the login limiter: a stolen session cannot guess it
    faster than a login could), then set the new one, which ends every session and the token."""
    c = console(request)
    ip = client_ip(request)
    await c.limiter.attempt(user.name, ip)
    if await c.users.verify(user.name, current) is None:
        await c.audit.record("password.change", actor=user.name, target=user.name, ip=ip, ok=False, detail="wrong")
        raise BadRequest("the current password is wrong")
    await c.limiter.succeeded(user.name, ip)
    if confirm is not None and new != confirm:
        raise BadRequest("the two new passwords differ")
    await c.users.set_password(user.name, new)
    await c.audit.record("password.change", actor=user.name, target=user.name, ip=ip)


async def audited(request: Request, action: str, target: str, detail: str = "") -> None:
    """An audit record of an authenticated admin action (router/audit.py)."""
    user: User | None = getattr(request.state, "user", None)
    await console(request).audit.record(
        action, actor=user.name if user else "", target=target, ip=client_ip(request), detail=detail
    )


async def fresh_session(request: Request, response: Response, name: str) -> None:
    """A new session cookie for ``name`` (after a change that ended their sessions, this one too)."""
    c = console(request)
    sid, _ = await c.sessions.create(await c.users.require(name))
    set_cookie(request, response, SESSION_COOKIE, sid, max_age=c.web.session_ttl_s)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure_request(request),
        path="/",
    )


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


class SecurityHeaders:
    """Pure ASGI middleware (it must not buffer the SSE stream): CSP and friends on every response.

    The CSP allows scripts and styles from our own origin only, so even a message that slipped
    past escaping could not run inline script or load another origin's. Everything but the static
    files is ``Cache-Control: no-store`` (unless the response set its own): pages and API answers
    carry tokens, one-time passwords and customers' messages, which no browser or proxy cache
    should keep.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        cacheable = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not cacheable and not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
