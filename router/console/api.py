"""The JSON API under ``/api``, for the console's own scripts and for automation (Bearer tokens).

Every endpoint is declared once with ``@endpoint``: the declaration builds both the route and the
OpenAPI description served at ``/api/openapi.json``. Request bodies are pydantic models (the
untrusted boundary); access is checked by ``require`` (authentication, CSRF for cookie sessions,
role) and by the Console service (groups).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router.accounts import User
from rules import MessageIn

from .http import audited, change_own_password, console, fresh_session, require
from .service import ReplayRow

Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)


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


class PriorityIn(_Body):
    priority: str = Field(pattern=r"^[Pp][1-4]$")


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
    role: Literal["admin", "agent"] = "agent"
    groups: list[str] = []
    password: str | None = Field(None, description="omitted: a one-time password is generated and returned")


class UserPatch(_Body):
    role: Literal["admin", "agent"] | None = None
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


class CannedIn(_Body):
    title: str = Field(min_length=1, max_length=80)
    text: str = Field(min_length=1, max_length=5000)


class BodyError(ValueError):
    """The request body is not what the endpoint takes; ``errors`` as pydantic reports them."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid request body")
        self.errors = errors


class UnsupportedMediaType(ValueError):
    """A JSON endpoint was sent another content type (415): a form post must not reach the body
    parser after the CSRF check read it as a form."""


async def body(request: Request, model: type[M]) -> M:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType(f"send application/json, not {kind}")
    try:
        raw = await request.body()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise BodyError([{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]) from None


# -- declaration ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None
    admin: bool
    tag: str


ENDPOINTS: list[Endpoint] = []


def endpoint(
    method: str, path: str, summary: str, *, body: type[BaseModel] | None = None, admin: bool = False, tag: str = ""
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ENDPOINTS.append(Endpoint(method, path, fn, summary, body, admin, tag or path.split("/")[2]))
        return fn

    return register


def ok(**values: Any) -> JSONResponse:
    return JSONResponse({"ok": True, **values})


def idempotency(request: Request, user: User) -> str | None:
    """The request id of a client's ``Idempotency-Key`` header (its retry of a write changes nothing
    twice, router/requests.py), scoped to the caller and the endpoint; None without the header."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= 200:
        raise ValueError("an Idempotency-Key has 1 to 200 characters")
    return f"api:{user.name}:{request.url.path}:{key}"


# -- me ------------------------------------------------------------------------------------------
@endpoint("GET", "/api/me", "The authenticated user, with the CSRF token of a cookie session")
async def me(request: Request) -> Response:
    user = await require(request, allow_must_change=True)
    return JSONResponse({**user.to_dict(), "csrf": request.state.csrf or None})


@endpoint("POST", "/api/me/password", "Change one's own password", body=PasswordIn)
async def change_password(request: Request) -> Response:
    user = await require(request, allow_must_change=True)
    data = await body(request, PasswordIn)
    await change_own_password(request, user, data.current, data.new)
    response = ok()
    if request.state.via == "session":
        await fresh_session(request, response, user.name)
    return response


# -- queues and conversations --------------------------------------------------------------------
@endpoint("GET", "/api/groups", "The caller's groups with depth, oldest wait and SLA breaches", tag="queues")
async def groups(request: Request) -> Response:
    user = await require(request)
    return JSONResponse({"groups": await console(request).queue_stats(user)})


@endpoint("GET", "/api/groups/{group}/queue", "A group's queue, by priority then SLA due time", tag="queues")
async def queue(request: Request) -> Response:
    user = await require(request)
    raw = request.query_params.get("limit", "100")
    limit = min(500, max(1, int(raw))) if raw.isdigit() else 100
    convs = await console(request).queue(user, request.path_params["group"], limit)
    return JSONResponse({"conversations": [c.to_dict() for c in convs]})


@endpoint(
    "POST", "/api/groups/{group}/claim", "Claim the head of the queue, or one conversation", body=ClaimIn, tag="queues"
)
async def claim(request: Request) -> Response:
    user = await require(request)
    data = await body(request, ClaimIn)
    cid = await console(request).claim(
        user, request.path_params["group"], data.conversation, idempotency(request, user)
    )
    return JSONResponse({"conversation": cid}, status_code=200 if cid else 409)


@endpoint("GET", "/api/mine", "Conversations assigned to the caller", tag="queues")
async def mine(request: Request) -> Response:
    user = await require(request)
    return JSONResponse({"conversations": [c.to_dict() for c in await console(request).mine(user)]})


@endpoint(
    "GET", "/api/conversations/{conv_id}", "A conversation with its history and delivery states", tag="conversations"
)
async def conversation(request: Request) -> Response:
    user = await require(request)
    conv, history, deliveries = await console(request).detail(user, request.path_params["conv_id"])
    return JSONResponse(
        {
            "conversation": conv.to_dict(),
            "history": [h.to_dict() for h in history],
            "deliveries": deliveries,
        }
    )


@endpoint(
    "POST",
    "/api/conversations/{conv_id}/reply",
    "Reply on the conversation's channel",
    body=TextIn,
    tag="conversations",
)
async def reply(request: Request) -> Response:
    user = await require(request)
    data = await body(request, TextIn)
    reply_id = await console(request).reply(user, request.path_params["conv_id"], data.text, idempotency(request, user))
    return JSONResponse({"reply": reply_id, "status": "queued"}, status_code=202)


@endpoint(
    "POST", "/api/conversations/{conv_id}/note", "Add an internal note (never sent)", body=TextIn, tag="conversations"
)
async def note(request: Request) -> Response:
    user = await require(request)
    data = await body(request, TextIn)
    await console(request).note(user, request.path_params["conv_id"], data.text, idempotency(request, user))
    return ok()


@endpoint(
    "POST", "/api/conversations/{conv_id}/release", "Put a claimed conversation back in its queue", tag="conversations"
)
async def release(request: Request) -> Response:
    user = await require(request)
    await console(request).release(user, request.path_params["conv_id"], idempotency(request, user))
    return ok()


@endpoint(
    "POST",
    "/api/conversations/{conv_id}/transfer",
    "Move to another group's queue",
    body=TransferIn,
    tag="conversations",
)
async def transfer(request: Request) -> Response:
    user = await require(request)
    data = await body(request, TransferIn)
    await console(request).transfer(
        user, request.path_params["conv_id"], data.group, data.reason, idempotency(request, user)
    )
    return ok()


@endpoint(
    "POST",
    "/api/conversations/{conv_id}/priority",
    "Change the priority (P1..P4)",
    body=PriorityIn,
    tag="conversations",
)
async def priority(request: Request) -> Response:
    user = await require(request)
    data = await body(request, PriorityIn)
    await console(request).set_priority(user, request.path_params["conv_id"], data.priority, idempotency(request, user))
    return ok()


@endpoint("POST", "/api/conversations/{conv_id}/close", "Close the conversation", tag="conversations")
async def close(request: Request) -> Response:
    user = await require(request)
    await console(request).close(user, request.path_params["conv_id"], idempotency(request, user))
    return ok()


@endpoint("GET", "/api/canned", "Canned responses for the reply box", tag="conversations")
async def canned(request: Request) -> Response:
    await require(request)
    return JSONResponse({"canned": await console(request).canned()})


@endpoint("POST", "/api/canned", "Add or replace a canned response", body=CannedIn, admin=True, tag="admin")
async def canned_set(request: Request) -> Response:
    user = await require(request, admin=True)
    data = await body(request, CannedIn)
    await console(request).set_canned(user, data.title, data.text)
    return ok()


# -- rules (admins) ------------------------------------------------------------------------------
def _errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {"line": e.line, "col": e.col, "rule": e.rule_id, "reason": e.reason, "severity": e.severity, "text": str(e)}
        for e in errors
    ]


@endpoint("GET", "/api/rules", "The rule set in force: source, published version", admin=True)
async def rules_active(request: Request) -> Response:
    await require(request, admin=True)
    source, published = await console(request).active_source()
    engine = await console(request).engine()
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


@endpoint(
    "POST", "/api/rules/validate", "Validate a draft: every error with line and column", body=SourceIn, admin=True
)
async def rules_validate(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, SourceIn)
    checked = await console(request).validate(data.source)
    version = checked.engine.version if checked.engine else None
    return JSONResponse({"valid": checked.ok, "version": version, "errors": _errors(checked.errors)})


@endpoint("POST", "/api/rules/try", "Route one message with the draft (or the rules in force)", body=TryIn, admin=True)
async def rules_try(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, TryIn)
    msg = MessageIn(
        channel=data.channel,
        text=data.text,
        subject=data.subject,
        account=data.account,
        sender=data.sender,
        language=data.language,
        new_conversation=data.new_conversation,
    )
    decision, checked = await console(request).try_message(data.source, msg)
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


@endpoint(
    "POST",
    "/api/rules/replay",
    "Route the last N inbox messages with the draft; what changes",
    body=ReplayIn,
    admin=True,
)
async def rules_replay(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, ReplayIn)
    rows, compared, checked = await console(request).replay(data.source, data.count)
    if not checked.ok:
        return JSONResponse({"valid": False, "errors": _errors(checked.errors)}, status_code=422)
    return JSONResponse({"valid": True, "compared": compared, "changed": [_row(r) for r in rows]})


@endpoint(
    "POST", "/api/rules/publish", "Validate and publish; workers switch within seconds", body=PublishIn, admin=True
)
async def rules_publish(request: Request) -> Response:
    user = await require(request, admin=True)
    data = await body(request, PublishIn)
    published = await console(request).publish(user, data.source, data.comment, idempotency(request, user))
    return JSONResponse(
        {"number": published.number, "version": published.version, "author": published.author, "at": published.at},
        status_code=201,
    )


@endpoint("GET", "/api/rules/history", "Publish and rollback log, newest first", admin=True)
async def rules_history(request: Request) -> Response:
    await require(request, admin=True)
    return JSONResponse({"history": await console(request).rules_history()})


@endpoint("GET", "/api/rules/versions/{number:int}", "One published version with its source", admin=True)
async def rules_version(request: Request) -> Response:
    await require(request, admin=True)
    p = await console(request).office.rules.get(request.path_params["number"])
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


@endpoint("GET", "/api/rules/diff", "Unified diff of two published versions (?a=N&b=M)", admin=True)
async def rules_diff(request: Request) -> Response:
    await require(request, admin=True)
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not (a.isdigit() and b.isdigit()):
        raise ValueError("name two published versions: ?a=N&b=M")
    return JSONResponse({"diff": await console(request).office.rules.diff(int(a), int(b))})


@endpoint(
    "POST",
    "/api/rules/rollback",
    "Make an earlier version active (default: the previous one)",
    body=RollbackIn,
    admin=True,
)
async def rules_rollback(request: Request) -> Response:
    user = await require(request, admin=True)
    data = await body(request, RollbackIn)
    target = await console(request).rollback(user, data.to, idempotency(request, user))
    return JSONResponse({"number": target.number, "version": target.version})


# -- users (admins) ------------------------------------------------------------------------------
@endpoint("GET", "/api/users", "Console users", admin=True)
async def users_list(request: Request) -> Response:
    await require(request, admin=True)
    return JSONResponse({"users": [u.to_dict() for u in await console(request).users.all()]})


@endpoint("POST", "/api/users", "Add a user (returns a one-time password when none is given)", body=UserIn, admin=True)
async def users_add(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, UserIn)
    password = await console(request).users.add(data.name, data.role, data.groups, data.password)
    await audited(request, "user.add", data.name, data.role)
    return JSONResponse({"name": data.name, "password": None if data.password else password}, status_code=201)


@endpoint("GET", "/api/users/{name}", "One user", admin=True)
async def users_get(request: Request) -> Response:
    await require(request, admin=True)
    return JSONResponse((await console(request).users.require(request.path_params["name"])).to_dict())


@endpoint("PATCH", "/api/users/{name}", "Change a user's role, groups or password", body=UserPatch, admin=True)
async def users_patch(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, UserPatch)
    users = console(request).users
    name = request.path_params["name"]
    user = await users.update(name, role=data.role, groups=data.groups)
    await audited(request, "user.update", name, f"{user.role} {','.join(user.groups)}")
    if data.password is not None:
        await users.set_password(name, data.password, must_change=True)
        await audited(request, "user.password_reset", name)
    return JSONResponse(user.to_dict())


@endpoint("DELETE", "/api/users/{name}", "Delete a user (and their API token)", admin=True)
async def users_delete(request: Request) -> Response:
    user = await require(request, admin=True)
    if request.path_params["name"] == user.name:
        raise ValueError("you cannot delete yourself")
    await console(request).users.delete(request.path_params["name"])
    await audited(request, "user.delete", request.path_params["name"])
    return ok()


@endpoint(
    "POST",
    "/api/users/{name}/token",
    "Issue a new API token (scope, expiry) for the user; revokes the old",
    body=TokenIn,
    admin=True,
)
async def users_token(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, TokenIn)
    name = request.path_params["name"]
    ttl = None if data.ttl_days is None else data.ttl_days * 86400
    token = await console(request).users.issue_token(name, data.scope, ttl)
    await audited(request, "token.issue", name, data.scope)
    return JSONResponse({"token": token, "scope": data.scope}, status_code=201)


@endpoint("DELETE", "/api/users/{name}/token", "Revoke the user's API token", admin=True)
async def users_token_revoke(request: Request) -> Response:
    await require(request, admin=True)
    await console(request).users.revoke_token(request.path_params["name"])
    await audited(request, "token.revoke", request.path_params["name"])
    return ok()


@endpoint("GET", "/api/audit", "The audit log, newest first (?before=<id> pages back)", admin=True, tag="users")
async def audit_log(request: Request) -> Response:
    await require(request, admin=True)
    entries = await console(request).audit.recent(200, request.query_params.get("before") or None)
    return JSONResponse([e.to_dict() for e in entries])


# -- dashboard and sandbox -----------------------------------------------------------------------
@endpoint("GET", "/api/stats", "Queues, counters, health, top tags and the time series", admin=True, tag="dashboard")
async def stats(request: Request) -> Response:
    await require(request, admin=True)
    return JSONResponse(await console(request).dashboard())


@endpoint("POST", "/api/sandbox/messages", "Write as a sandbox user", body=SandboxIn, admin=True, tag="sandbox")
async def sandbox_send(request: Request) -> Response:
    await require(request, admin=True)
    data = await body(request, SandboxIn)
    entry = await console(request).sandbox_send(data.user, data.text, data.attributes)
    return JSONResponse({"entry": entry}, status_code=202)


@endpoint("GET", "/api/sandbox/{user}/inbox", "Replies a sandbox user received", admin=True, tag="sandbox")
async def sandbox_inbox(request: Request) -> Response:
    await require(request, admin=True)
    return JSONResponse({"replies": await console(request).sandbox_inbox(request.path_params["user"])})


# -- OpenAPI -------------------------------------------------------------------------------------
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint declared here (and the event stream)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for ep in ENDPOINTS:
        path = ep.path.replace(":int}", "}")
        params = [
            {"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for p in path.split("/")
            if p.startswith("{")
        ]
        op: dict[str, Any] = {
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "401": {"description": "not authenticated"},
                "403": {"description": "not allowed (role, group, or CSRF token missing)"},
                "404": {"description": "not found (or not in the caller's groups)"},
            },
        }
        if ep.admin:
            op["description"] = "Admins only."
        if ep.body is not None:
            name = ep.body.__name__
            schemas[name] = ep.body.model_json_schema(ref_template="#/components/schemas/{model}")
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
            }
            op["responses"]["422"] = {"description": "invalid body"}
        paths.setdefault(path, {})[ep.method.lower()] = op
    paths["/api/events"] = {
        "get": {
            "summary": "Live events of the caller's groups (Server-Sent Events; ?group=G repeatable)",
            "tags": ["queues"],
            "responses": {"200": {"description": "text/event-stream"}, "403": {"description": "not your group"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard console API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "switchboard users token NAME"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sb_session"},
            },
        },
        "security": [{"token": []}, {"session": []}],
    }


async def openapi_json(request: Request) -> Response:
    # Public, like any API description: it names endpoints, not data.
    return JSONResponse(openapi())


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [Route("/api/openapi.json", openapi_json, methods=["GET"])]
    by_path: dict[str, list[Endpoint]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, []).append(ep)
    for path, eps in by_path.items():
        table = {ep.method: ep.handler for ep in eps}

        async def dispatch(request: Request, table: dict[str, Handler] = table) -> Response:
            # Starlette answers HEAD on GET routes: serve it with the GET handler.
            handler = table.get(request.method) or table["GET"]
            return await handler(request)

        out.append(Route(path, dispatch, methods=list(table)))
    return out
