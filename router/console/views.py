"""HTML pages for everyone: login, password, queues, conversations, sandbox simulator.

Forms post with the session's CSRF token (hidden field ``csrf``); every handler starts with
``require`` and goes through the Console service, which checks the user's groups.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from router.accounts import PasswordExpired, RateLimited
from router.conversations import CLOSE_REASONS, HistoryEntry
from router.errors import BadRequest

from .http import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    authenticate,
    change_own_password,
    client_ip,
    console,
    fresh_session,
    require,
    set_cookie,
)
from .pages import redirect, render


def _field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value if isinstance(value, str) else default


def _safe_next(target: str) -> str:
    # Only a local path: never an open redirect to another site after login.
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


# -- login / logout / password -------------------------------------------------------------------
async def login_page(request: Request) -> Response:
    if await authenticate(request) is not None:
        return RedirectResponse("/", status_code=303)
    token = secrets.token_urlsafe(24)
    response = await render(request, "login.html", login_csrf=token, next=request.query_params.get("next", "/"))
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


async def login(request: Request) -> Response:
    form = await request.form()
    name = _field(form, "name").strip().lower()
    password = _field(form, "password")
    nxt = _safe_next(_field(form, "next", "/"))
    # Login CSRF (double submit): a foreign page cannot log a victim into the attacker's account.
    sent, expected = _field(form, "csrf"), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        return await _login_again(request, "Your login form expired: please try again.", 403, name, nxt)
    c = console(request)
    ip = client_ip(request)
    try:
        await c.limiter.attempt(name, ip)
        user = await c.users.verify(name, password)
    except RateLimited as exc:
        await c.audit.record("login", actor=name, ip=ip, ok=False, detail="rate limited")
        response = await _login_again(request, str(exc).capitalize() + ".", 429, name, nxt)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except PasswordExpired as exc:
        await c.audit.record("login", actor=name, ip=ip, ok=False, detail="one-time password expired")
        return await _login_again(request, str(exc).capitalize() + ".", 401, name, nxt)
    if user is None:
        await c.audit.record("login", actor=name, ip=ip, ok=False, detail="wrong user name or password")
        return await _login_again(request, "Wrong user name or password.", 401, name, nxt)
    await c.limiter.succeeded(name, ip)
    await c.audit.record("login", actor=user.name, ip=ip)
    sid, _ = await c.sessions.create(user)
    response = RedirectResponse("/password" if user.must_change else nxt, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, sid, max_age=c.web.session_ttl_s)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


async def _login_again(request: Request, error: str, status: int, name: str, nxt: str) -> Response:
    token = secrets.token_urlsafe(24)
    response = await render(request, "login.html", status, login_csrf=token, next=nxt, error=error, name=name)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


async def logout(request: Request) -> Response:
    await require(request, allow_must_change=True)
    sid = request.cookies.get(SESSION_COOKIE, "")
    await console(request).sessions.delete(sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def password_page(request: Request) -> Response:
    user = await require(request, allow_must_change=True)
    return await render(request, "password.html", forced=user.must_change)


async def password(request: Request) -> Response:
    user = await require(request, allow_must_change=True)
    form = await request.form()
    error = ""
    try:
        await change_own_password(request, user, _field(form, "current"), _field(form, "new"), _field(form, "confirm"))
    except (RateLimited, BadRequest) as exc:
        error = str(exc).capitalize() + "."
    if error:
        return await render(request, "password.html", 400, forced=user.must_change, error=error)
    response = redirect(request, "/", "Password changed.")
    await fresh_session(request, response, user.name)
    return response


# -- queues --------------------------------------------------------------------------------------
async def home(request: Request) -> Response:
    user = await require(request)
    return RedirectResponse("/admin/dashboard" if user.is_admin else "/queues", status_code=303)


async def queues(request: Request) -> Response:
    user = await require(request)
    c = console(request)
    groups = await c.groups_of(user)
    selected = request.query_params.get("group") or (groups[0] if groups else "")
    convs = await c.queue(user, selected) if selected else []
    return await render(
        request,
        "queues.html",
        groups=groups,
        selected=selected,
        stats=await c.queue_stats(user),
        convs=convs,
        incidents=await c.office.incidents.collapsed(selected) if selected else [],
        mine=await c.mine(user),
        beat_s=c.settings.assign.heartbeat_s,
        agents=await c.group_agents(user, selected) if selected else [],
    )


async def queue_rows(request: Request) -> Response:
    """The queue table's rows alone, re-fetched by the page on live events."""
    user = await require(request)
    c = console(request)
    group = request.path_params["group"]
    return await render(
        request,
        "_queue_rows.html",
        convs=await c.queue(user, group),
        incidents=await c.office.incidents.collapsed(group),
        selected=group,
        stats=await c.queue_stats(user),
        mine=await c.mine(user),
    )


async def claim(request: Request) -> Response:
    user = await require(request)
    form = await request.form()
    group = request.path_params["group"]
    cid = await console(request).claim(user, group, _field(form, "conversation"))
    if cid is None:
        return redirect(request, f"/queues?group={group}", "Nothing to claim: someone was faster.", "warn")
    return redirect(request, f"/conversations/{cid}", f"Conversation #{cid} is yours.")


# -- a conversation ------------------------------------------------------------------------------
def timeline(history: list[HistoryEntry], deliveries: dict[str, str]) -> list[dict[str, Any]]:
    """History entries shaped for the template; delivery entries fold into their reply."""
    details: dict[str, str] = {}
    for h in history:
        if h.type == "delivery":
            details[str(h.data.get("reply", ""))] = str(h.data.get("detail", ""))
    out = []
    for h in history:
        if h.type == "delivery":
            continue
        item: dict[str, Any] = {"type": h.type, "at_ms": h.at_ms, "data": h.data}
        if h.type == "outbound":
            rid = str(h.data.get("id", ""))
            item["status"] = deliveries.get(rid, "queued")
            item["detail"] = details.get(rid, "")
        out.append(item)
    return out


async def _conversation_context(request: Request) -> dict[str, Any]:
    user = await require(request)
    c = console(request)
    record = await c.record(user, request.path_params["conv_id"])
    conv, history = record.conv, record.history
    inbound = [h for h in history if h.type == "inbound"]
    last_decision = inbound[-1].data.get("decision", {}) if inbound else {}
    attachments = [a for h in inbound for a in h.data.get("attachments", [])]
    return {
        "conv": conv,
        "timeline": timeline(history, record.deliveries),
        "archived": record.archived,
        "decision": last_decision,
        "attachments": attachments,
        "groups": await c.all_groups(),
        "canned": await c.canned(),
        "close_reasons": CLOSE_REASONS,
        "sla": await c.countdowns(conv, history),
    }


async def conversation(request: Request) -> Response:
    return await render(request, "conversation.html", **await _conversation_context(request))


async def conversation_timeline(request: Request) -> Response:
    return await render(request, "_timeline.html", **await _conversation_context(request))


async def conversation_action(request: Request) -> Response:
    user = await require(request)
    form = await request.form()
    c = console(request)
    cid = request.path_params["conv_id"]
    action = request.path_params["action"]
    here = f"/conversations/{cid}"
    if action == "reply":
        await c.reply(user, cid, _field(form, "text"))
        return redirect(request, here, "Reply queued.")
    if action == "note":
        await c.note(user, cid, _field(form, "text"))
        return redirect(request, here, "Note added.")
    if action == "release":
        await c.release(user, cid)
        return redirect(request, "/queues", f"#{cid} is back in its queue.")
    if action == "transfer":
        group = _field(form, "group")
        # "Routed wrong: move" is one click: the reason marks the label for the model's training.
        reason = "routed wrong" if _field(form, "misrouted") else _field(form, "reason")
        await c.transfer(user, cid, group, reason)
        return redirect(request, "/queues", f"#{cid} moved to {group}.")
    if action == "priority":
        await c.set_priority(user, cid, _field(form, "priority"))
        return redirect(request, here, "Priority changed.")
    if action == "close":
        await c.close(user, cid, _field(form, "reason"))
        return redirect(request, "/queues", f"#{cid} closed.")
    if action in ("ban", "mute"):
        # The conversation's sender, from its page (admins only): held at once, audited.
        block = await c.block_sender(user, action, "", _field(form, "for"), _field(form, "reason"), conv_id=cid)
        return redirect(request, here, f"{block.channel}:{block.sender} {block.mode}; #{cid} held out of the queues.")
    if action == "restore":
        await c.restore(user, cid)
        return redirect(request, here, f"#{cid} is back in its queue.")
    if action == "retry-failed":
        # `switchboard outbox retry --conversation ID` from the page, after a fix (admins only).
        queued = await c.retry_failed(user, cid)
        return redirect(request, here, f"{queued} failed reply(ies) queued to be sent again.")
    return Response("no such action", status_code=404)


# -- sandbox simulator ---------------------------------------------------------------------------
async def sandbox(request: Request) -> Response:
    await require(request, admin=True)
    who = request.query_params.get("user", "alice")
    return await render(request, "sandbox.html", who=who, replies=await console(request).sandbox_inbox(who))


async def sandbox_replies(request: Request) -> Response:
    await require(request, admin=True)
    who = request.query_params.get("user", "alice")
    return await render(request, "_sandbox_replies.html", who=who, replies=await console(request).sandbox_inbox(who))


async def sandbox_send(request: Request) -> Response:
    await require(request, admin=True)
    form = await request.form()
    who = _field(form, "user", "alice").strip() or "alice"
    attrs = dict(kv.split("=", 1) for kv in _field(form, "attributes").split() if "=" in kv)
    await console(request).sandbox_send(who, _field(form, "text"), attrs)
    return redirect(request, f"/sandbox?user={who}", "Sent. It is routed within a second.")


async def sandbox_press(request: Request) -> Response:
    await require(request, admin=True)
    form = await request.form()
    who = _field(form, "user", "alice").strip() or "alice"
    number = _field(form, "button")
    if not number.isdigit():
        raise BadRequest("which button? (a number from 1)")
    label = await console(request).sandbox_press(who, int(number), _field(form, "reply"))
    return redirect(request, f"/sandbox?user={who}", f"Pressed “{label}” as {who}.")


def routes() -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/password", password_page, methods=["GET"]),
        Route("/password", password, methods=["POST"]),
        Route("/queues", queues),
        Route("/queues/{group}/rows", queue_rows),
        Route("/queues/{group}/claim", claim, methods=["POST"]),
        Route("/conversations/{conv_id}", conversation),
        Route("/conversations/{conv_id}/timeline", conversation_timeline),
        Route("/conversations/{conv_id}/{action}", conversation_action, methods=["POST"]),
        Route("/sandbox", sandbox, methods=["GET"]),
        Route("/sandbox", sandbox_send, methods=["POST"]),
        Route("/sandbox/replies", sandbox_replies),
        Route("/sandbox/press", sandbox_press, methods=["POST"]),
    ]
