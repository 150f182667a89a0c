"""The JSON API under ``/api`` (FastAPI), for the console's own scripts and for automation (Bearer tokens).

Each handler declares what it takes, and FastAPI generates the OpenAPI description from that
(served at ``/api/openapi.json``): its body model (the untrusted boundary, pydantic), and its
caller — ``Caller`` (any authenticated user), ``Admin`` (admins only) or ``Me`` (also a user who
must still change a one-time password). These dependencies are the one check of authentication,
CSRF for cookie sessions, token scope and role (``require``); groups are checked by the Console
service. Errors map to status codes in router/console/app.py: ``BadRequest`` 400, a body that does
not validate 422 (``{"error", "details"}``), a body that is not JSON 415, a bug 500.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from router.accounts import User
from router.errors import BadRequest
from router.presence import AgentState, parse_capacity
from rules import MessageIn

from . import sse
from .http import SESSION_COOKIE, audited, change_own_password, console, fresh_session, require
from .service import Console, ReplayRow


# -- request bodies ------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = {"extra": "forbid"}


class ClaimIn(_Body):
    conversation: str = Field("", description="claim this conversation; empty: the head of the queue")


class TextIn(_Body):
    text: str = Field(min_length=1, max_length=20_000)


class TransferIn(_Body):
    group: str = Field(min_length=1)
    reason: str = ""


class CloseIn(_Body):
    reason: str = ""  # one of router.conversations.CLOSE_REASONS; "" = resolved


class PriorityIn(_Body):
    priority: str = Field(pattern=r"^[Pp][1-4]$")


class PresenceIn(_Body):
    status: Literal["online", "away", "offline"]


class AgentProfileIn(_Body):
    groups: list[str] | None = None
    languages: list[str] | None = None
    tags: list[str] | None = Field(None, description="skill tags, e.g. vip, api")
    capacity: dict[str, int] | None = Field(None, description="open conversations per channel, e.g. {telegram: 3}")


class WaitingIn(_Body):
    on: bool  # true: waiting on the user (SLA next-response and resolution clocks pause)


class SourceIn(_Body):
    source: str = Field(max_length=2_000_000)


class TryIn(_Body):
    source: str | None = Field(None, description="draft rules; omitted: the rules in force")
    channel: str = "sandbox"
    text: str = ""
    subject: str | None = None
    account: str = ""
    sender: dict[str, str] = {}
    language: str | None = None
    new_conversation: bool = True


class ReplayIn(_Body):
    source: str
    count: int = Field(100, ge=1, le=5000)


class PublishIn(_Body):
    source: str
    comment: str = ""


class RollbackIn(_Body):
    to: int | None = None


class UserIn(_Body):
    name: str
    role: Literal["admin", "supervisor", "agent"] = "agent"
    groups: list[str] = []
    password: str | None = Field(None, description="omitted: a one-time password is generated and returned")


class UserPatch(_Body):
    role: Literal["admin", "supervisor", "agent"] | None = None
    groups: list[str] | None = None
    password: str | None = Field(None, description="a new password the user must change at next login")


class TokenIn(_Body):
    scope: Literal["read", "reply", "admin"] = "reply"
    ttl_days: int | None = Field(None, ge=0, le=3650, description="omitted: web.token_ttl_s; 0: never expires")


class PasswordIn(_Body):
    current: str
    new: str


class SandboxIn(_Body):
    user: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=20_000)
    attributes: dict[str, str] = {}


class SandboxPressIn(_Body):
    user: str = Field(min_length=1, max_length=64)
    button: int = Field(ge=1, description="the button's number under the reply, from 1")
    reply: str | None = Field(None, description="the reply's id; omitted: the latest reply with buttons")


class CannedIn(_Body):
    title: str = Field(min_length=1, max_length=80)
    text: str = Field(min_length=1, max_length=5000)


# -- who is asking -------------------------------------------------------------------------------
# Declared for the OpenAPI description (its security schemes); ``require`` reads the credentials.
_bearer = HTTPBearer(auto_error=False, description="switchboard users token NAME")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_SessionCookie = Annotated[str | None, Depends(_cookie)]


async def _caller(request: Request, _token: _Credentials, _session: _SessionCookie) -> User:
    return await require(request)


async def _admin(request: Request, _token: _Credentials, _session: _SessionCookie) -> User:
    return await require(request, admin=True)


async def _self(request: Request, _token: _Credentials, _session: _SessionCookie) -> User:
    return await require(request, allow_must_change=True)


Caller = Annotated[User, Depends(_caller)]
Admin = Annotated[User, Depends(_admin)]
Me = Annotated[User, Depends(_self)]
Service = Annotated[Console, Depends(console)]

router = APIRouter(prefix="/api")


def ok(**values: Any) -> JSONResponse:
    return JSONResponse({"ok": True, **values})


def idempotency(request: Request, user: User) -> str | None:
    """The request id of a client's ``Idempotency-Key`` header (its retry of a write changes nothing
    twice, router/requests.py), scoped to the caller and the endpoint; None without the header."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= 200:
        raise BadRequest("an Idempotency-Key has 1 to 200 characters")
    return f"api:{user.name}:{request.url.path}:{key}"


# -- me ------------------------------------------------------------------------------------------
@router.get("/me", tags=["me"], summary="The authenticated user, with the CSRF token of a cookie session")
async def me(request: Request, user: Me) -> Response:
    return JSONResponse({**user.to_dict(), "csrf": request.state.csrf or None})


@router.post("/me/password", tags=["me"], summary="Change one's own password")
async def change_password(request: Request, user: Me, data: PasswordIn) -> Response:
    await change_own_password(request, user, data.current, data.new)
    response = ok()
    if request.state.via == "session":
        await fresh_session(request, response, user.name)
    return response


# -- presence (router/presence.py) ---------------------------------------------------------------
def _agent(c: Console, state: AgentState) -> dict[str, Any]:
    return state.to_dict(c.presence.clock.now_ms(), c.presence.grace_ms)


@router.get("/me/presence", tags=["me"], summary="The caller's status, profile and load as an agent")
async def my_presence(user: Caller, c: Service) -> Response:
    return JSONResponse(_agent(c, await c.presence.get_or_offline(user.name)))


@router.post("/me/presence", tags=["me"], summary="Set one's own status: online, away or offline")
async def set_my_presence(user: Caller, c: Service, data: PresenceIn) -> Response:
    return JSONResponse(_agent(c, await c.presence.set_status(user.name, data.status)))


@router.post("/me/heartbeat", tags=["me"], summary="Keep one's status alive (the console tab calls it)")
async def heartbeat(user: Caller, c: Service) -> Response:
    return ok(status=await c.presence.beat(user.name), every_s=c.settings.assign.heartbeat_s)


@router.get("/agents", tags=["users"], summary="Agents: status, groups, skills, capacity and load per channel")
async def agents_list(user: Admin, c: Service) -> Response:
    return JSONResponse({"agents": [_agent(c, a) for a in await c.presence.all()]})


@router.patch("/agents/{name}", tags=["users"], summary="Change an agent's groups, languages, skill tags or capacity")
async def agents_patch(request: Request, name: str, user: Admin, c: Service, data: AgentProfileIn) -> Response:
    state = await c.presence.set_profile(
        name,
        groups=data.groups,
        languages=data.languages,
        tags=data.tags,
        capacity=None if data.capacity is None else parse_capacity(data.capacity),
    )
    await audited(request, "agent.update", name, json.dumps(data.model_dump(exclude_none=True)))
    return JSONResponse(_agent(c, state))


# -- queues and conversations --------------------------------------------------------------------
@router.get("/groups", tags=["queues"], summary="The caller's groups with depth, oldest wait and SLA breaches")
async def groups(user: Caller, c: Service) -> Response:
    return JSONResponse({"groups": await c.queue_stats(user)})


@router.get("/groups/{group}/queue", tags=["queues"], summary="A group's queue, by priority then SLA due time")
async def queue(request: Request, group: str, user: Caller, c: Service) -> Response:
    raw = request.query_params.get("limit", "100")
    limit = min(500, max(1, int(raw))) if raw.isdigit() else 100
    convs = await c.queue(user, group, limit)
    return JSONResponse({"conversations": [conv.to_dict() for conv in convs]})


@router.post("/groups/{group}/claim", tags=["queues"], summary="Claim the head of the queue, or one conversation")
async def claim(
    request: Request, group: str, user: Caller, c: Service, data: Annotated[ClaimIn, Body(default_factory=ClaimIn)]
) -> Response:
    cid = await c.claim(user, group, data.conversation, idempotency(request, user))
    return JSONResponse({"conversation": cid}, status_code=200 if cid else 409)


@router.get("/mine", tags=["queues"], summary="Conversations assigned to the caller")
async def mine(user: Caller, c: Service) -> Response:
    return JSONResponse({"conversations": [conv.to_dict() for conv in await c.mine(user)]})


@router.get(
    "/events",
    tags=["queues"],
    summary="Live events of the caller's groups (Server-Sent Events; ?group=G repeatable)",
    response_class=StreamingResponse,
)
async def events(request: Request, user: Caller) -> Response:
    return await sse.events(request, user)


@router.get(
    "/conversations/{conv_id}",
    tags=["conversations"],
    summary="A conversation with its history and delivery states",
)
async def conversation(conv_id: str, user: Caller, c: Service) -> Response:
    conv, history, deliveries = await c.detail(user, conv_id)
    return JSONResponse(
        {"conversation": conv.to_dict(), "history": [h.to_dict() for h in history], "deliveries": deliveries}
    )


@router.get(
    "/conversations/{conv_id}/sla",
    tags=["conversations"],
    summary="The conversation's SLA countdowns: every target's deadline, state and pause, by the server's clock",
)
async def sla(conv_id: str, user: Caller, c: Service) -> Response:
    return JSONResponse(await c.sla(user, conv_id))


@router.post("/conversations/{conv_id}/reply", tags=["conversations"], summary="Reply on the conversation's channel")
async def reply(request: Request, conv_id: str, user: Caller, c: Service, data: TextIn) -> Response:
    reply_id = await c.reply(user, conv_id, data.text, idempotency(request, user))
    return JSONResponse({"reply": reply_id, "status": "queued"}, status_code=202)


@router.post("/conversations/{conv_id}/note", tags=["conversations"], summary="Add an internal note (never sent)")
async def note(request: Request, conv_id: str, user: Caller, c: Service, data: TextIn) -> Response:
    await c.note(user, conv_id, data.text, idempotency(request, user))
    return ok()


@router.post(
    "/conversations/{conv_id}/release", tags=["conversations"], summary="Put a claimed conversation back in its queue"
)
async def release(request: Request, conv_id: str, user: Caller, c: Service) -> Response:
    await c.release(user, conv_id, idempotency(request, user))
    return ok()


@router.post("/conversations/{conv_id}/transfer", tags=["conversations"], summary="Move to another group's queue")
async def transfer(request: Request, conv_id: str, user: Caller, c: Service, data: TransferIn) -> Response:
    await c.transfer(user, conv_id, data.group, data.reason, idempotency(request, user))
    return ok()


@router.post("/conversations/{conv_id}/priority", tags=["conversations"], summary="Change the priority (P1..P4)")
async def priority(request: Request, conv_id: str, user: Caller, c: Service, data: PriorityIn) -> Response:
    await c.set_priority(user, conv_id, data.priority, idempotency(request, user))
    return ok()


@router.post(
    "/conversations/{conv_id}/waiting",
    tags=["conversations"],
    summary="Waiting on the user, or not: the SLA next-response and resolution clocks pause (docs/sla.md)",
)
async def waiting(request: Request, conv_id: str, user: Caller, c: Service, data: WaitingIn) -> Response:
    await c.wait_on_user(user, conv_id, data.on, idempotency(request, user))
    return ok()


@router.post("/conversations/{conv_id}/close", tags=["conversations"], summary="Close the conversation")
async def close(request: Request, conv_id: str, user: Caller, c: Service, data: CloseIn | None = None) -> Response:
    await c.close(user, conv_id, data.reason if data else "", idempotency(request, user))
    return ok()


@router.get("/canned", tags=["conversations"], summary="Canned responses for the reply box")
async def canned(user: Caller, c: Service) -> Response:
    return JSONResponse({"canned": await c.canned()})


@router.post("/canned", tags=["admin"], summary="Add or replace a canned response")
async def canned_set(user: Admin, c: Service, data: CannedIn) -> Response:
    await c.set_canned(user, data.title, data.text)
    return ok()


# -- rules (admins) ------------------------------------------------------------------------------
def _errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {"line": e.line, "col": e.col, "rule": e.rule_id, "reason": e.reason, "severity": e.severity, "text": str(e)}
        for e in errors
    ]


@router.get("/rules", tags=["rules"], summary="The rule set in force: source, published version")
async def rules_active(user: Admin, c: Service) -> Response:
    source, published = await c.active_source()
    engine = await c.engine()
    return JSONResponse(
        {
            "source": source,
            "version": engine.version,
            "published": None
            if published is None
            else {
                "number": published.number,
                "author": published.author,
                "at": published.at,
                "comment": published.comment,
            },
            "groups": list(engine.groups),
        }
    )


@router.post("/rules/validate", tags=["rules"], summary="Validate a draft: every error with line and column")
async def rules_validate(user: Admin, c: Service, data: SourceIn) -> Response:
    checked = await c.validate(data.source)
    version = checked.engine.version if checked.engine else None
    return JSONResponse({"valid": checked.ok, "version": version, "errors": _errors(checked.errors)})


@router.post("/rules/try", tags=["rules"], summary="Route one message with the draft (or the rules in force)")
async def rules_try(user: Admin, c: Service, data: TryIn) -> Response:
    msg = MessageIn(
        channel=data.channel,
        text=data.text,
        subject=data.subject,
        account=data.account,
        sender=data.sender,
        language=data.language,
        new_conversation=data.new_conversation,
    )
    decision, checked = await c.try_message(data.source, msg)
    if decision is None:
        assert checked is not None
        return JSONResponse({"valid": False, "errors": _errors(checked.errors)}, status_code=422)
    return JSONResponse({"valid": True, "decision": decision.to_dict()})


def _row(r: ReplayRow) -> dict[str, Any]:
    return {
        "entry": r.entry,
        "channel": r.channel,
        "sender": r.sender,
        "text": r.text,
        "before": r.before,
        "after": r.after,
        "changed": list(r.changed),
    }


@router.post("/rules/replay", tags=["rules"], summary="Route the last N inbox messages with the draft; what changes")
async def rules_replay(user: Admin, c: Service, data: ReplayIn) -> Response:
    rows, compared, checked = await c.replay(data.source, data.count)
    if not checked.ok:
        return JSONResponse({"valid": False, "errors": _errors(checked.errors)}, status_code=422)
    return JSONResponse({"valid": True, "compared": compared, "changed": [_row(r) for r in rows]})


@router.post("/rules/publish", tags=["rules"], summary="Validate and publish; workers switch within seconds")
async def rules_publish(request: Request, user: Admin, c: Service, data: PublishIn) -> Response:
    published = await c.publish(user, data.source, data.comment, idempotency(request, user))
    return JSONResponse(
        {"number": published.number, "version": published.version, "author": published.author, "at": published.at},
        status_code=201,
    )


@router.get("/rules/history", tags=["rules"], summary="Publish and rollback log, newest first")
async def rules_history(user: Admin, c: Service) -> Response:
    return JSONResponse({"history": await c.rules_history()})


@router.get("/rules/versions/{number:int}", tags=["rules"], summary="One published version with its source")
async def rules_version(number: int, user: Admin, c: Service) -> Response:
    p = await c.rule_version(number)
    return JSONResponse(
        {
            "number": p.number,
            "version": p.version,
            "author": p.author,
            "at": p.at,
            "comment": p.comment,
            "source": p.source,
        }
    )


@router.get("/rules/diff", tags=["rules"], summary="Unified diff of two published versions (?a=N&b=M)")
async def rules_diff(request: Request, user: Admin, c: Service) -> Response:
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not (a.isdigit() and b.isdigit()):
        raise BadRequest("name two published versions: ?a=N&b=M")
    return JSONResponse({"diff": await c.rule_versions_diff(int(a), int(b))})


@router.post("/rules/rollback", tags=["rules"], summary="Make an earlier version active (default: the previous one)")
async def rules_rollback(
    request: Request, user: Admin, c: Service, data: Annotated[RollbackIn, Body(default_factory=RollbackIn)]
) -> Response:
    target = await c.rollback(user, data.to, idempotency(request, user))
    return JSONResponse({"number": target.number, "version": target.version})


# -- users (admins) ------------------------------------------------------------------------------
@router.get("/models", tags=["rules"], summary="Published triage models: live, shadow, the shadow's agreement")
async def models(user: Admin, c: Service) -> Response:
    return JSONResponse(await c.models())


@router.get("/users", tags=["users"], summary="Console users")
async def users_list(user: Admin, c: Service) -> Response:
    return JSONResponse({"users": [u.to_dict() for u in await c.users.all()]})


@router.post("/users", tags=["users"], summary="Add a user (returns a one-time password when none is given)")
async def users_add(request: Request, user: Admin, c: Service, data: UserIn) -> Response:
    password = await c.users.add(data.name, data.role, data.groups, data.password)
    await audited(request, "user.add", data.name, data.role)
    return JSONResponse({"name": data.name, "password": None if data.password else password}, status_code=201)


@router.get("/users/{name}", tags=["users"], summary="One user")
async def users_get(name: str, user: Admin, c: Service) -> Response:
    return JSONResponse((await c.users.require(name)).to_dict())


@router.patch("/users/{name}", tags=["users"], summary="Change a user's role, groups or password")
async def users_patch(
    request: Request, name: str, user: Admin, c: Service, data: Annotated[UserPatch, Body(default_factory=UserPatch)]
) -> Response:
    changed = await c.users.update(name, role=data.role, groups=data.groups)
    await audited(request, "user.update", name, f"{changed.role} {','.join(changed.groups)}")
    if data.password is not None:
        await c.users.set_password(name, data.password, must_change=True)
        await audited(request, "user.password_reset", name)
    return JSONResponse(changed.to_dict())


@router.delete("/users/{name}", tags=["users"], summary="Delete a user (and their API token)")
async def users_delete(request: Request, name: str, user: Admin, c: Service) -> Response:
    if name == user.name:
        raise BadRequest("you cannot delete yourself")
    await c.users.delete(name)
    await audited(request, "user.delete", name)
    return ok()


@router.post(
    "/users/{name}/token", tags=["users"], summary="Issue a new API token (scope, expiry) for the user; revokes the old"
)
async def users_token(
    request: Request, name: str, user: Admin, c: Service, data: Annotated[TokenIn, Body(default_factory=TokenIn)]
) -> Response:
    ttl = None if data.ttl_days is None else data.ttl_days * 86400
    token = await c.users.issue_token(name, data.scope, ttl)
    await audited(request, "token.issue", name, data.scope)
    return JSONResponse({"token": token, "scope": data.scope}, status_code=201)


@router.delete("/users/{name}/token", tags=["users"], summary="Revoke the user's API token")
async def users_token_revoke(request: Request, name: str, user: Admin, c: Service) -> Response:
    await c.users.revoke_token(name)
    await audited(request, "token.revoke", name)
    return ok()


@router.get("/audit", tags=["users"], summary="The audit log, newest first (?before=<id> pages back)")
async def audit_log(request: Request, user: Admin, c: Service) -> Response:
    entries = await c.audit.recent(200, request.query_params.get("before") or None)
    return JSONResponse([e.to_dict() for e in entries])


# -- dashboard and sandbox -----------------------------------------------------------------------
@router.get("/stats", tags=["dashboard"], summary="Queues, counters, health, top tags and the time series")
async def stats(user: Admin, c: Service) -> Response:
    return JSONResponse(await c.dashboard())


@router.post("/sandbox/messages", tags=["sandbox"], summary="Write as a sandbox user")
async def sandbox_send(user: Admin, c: Service, data: SandboxIn) -> Response:
    entry = await c.sandbox_send(data.user, data.text, data.attributes)
    return JSONResponse({"entry": entry}, status_code=202)


@router.post("/sandbox/presses", tags=["sandbox"], summary="Press a button under a sandbox user's reply")
async def sandbox_press(user: Admin, c: Service, data: SandboxPressIn) -> Response:
    label = await c.sandbox_press(data.user, data.button, data.reply)
    return JSONResponse({"pressed": label}, status_code=202)


@router.get("/sandbox/{who}/inbox", tags=["sandbox"], summary="Replies a sandbox user received")
async def sandbox_inbox(who: str, user: Admin, c: Service) -> Response:
    return JSONResponse({"replies": await c.sandbox_inbox(who)})
