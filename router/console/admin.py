"""Admin pages: the rules editor (validate, try, replay, publish), history and rollback, users and
groups, canned responses, and the dashboard. Every handler requires an admin, server-side."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.accounts import ROLES, SCOPES, Role
from router.errors import BadRequest, SwitchboardError
from router.impostors import DECISIONS
from router.stats import answer_stats
from rules import MessageIn, RuleError, RuleSetError

from .http import audited, console, require
from .pages import redirect, render
from .service import Validation


def _field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value if isinstance(value, str) else default


def annotate(source: str, errors: list[RuleError], context: int = 2) -> list[dict[str, Any]]:
    """The draft's lines around each finding, each finding placed under its line."""
    lines = source.splitlines()
    at: dict[int, list[RuleError]] = {}
    for e in errors:
        at.setdefault(max(1, min(e.line, len(lines) or 1)), []).append(e)
    show: set[int] = set()
    for n in at:
        show.update(range(max(1, n - context), min(len(lines), n + context) + 1))
    out: list[dict[str, Any]] = []
    previous = 0
    for n in sorted(show):
        if previous and n != previous + 1:
            out.append({"gap": True})
        out.append({"gap": False, "n": n, "text": lines[n - 1] if n <= len(lines) else "", "errors": at.get(n, [])})
        previous = n
    return out


# -- rules ---------------------------------------------------------------------------------------
async def rules_page(request: Request) -> Response:
    await require(request, admin=True)
    source, published = await console(request).active_source()
    return await _rules(request, source, published_note=published)


async def _rules(request: Request, source: str, status: int = 200, **extra: Any) -> Response:
    c = console(request)
    _, published = await c.active_source()
    engine = await c.engine()
    context: dict[str, Any] = {
        "source": source,
        "published": published,
        "active_version": engine.version,
        "checked": None,
        "annotated": [],
        "decision": None,
        "replay": None,
        "try_form": {"channel": "sandbox", "text": "", "subject": "", "sender": "", "new": True},
        "replay_count": 100,
        "comment": "",
        "diff": "",
    }
    context.update(extra)
    checked: Validation | None = context["checked"]
    if checked is not None:
        context["annotated"] = annotate(source, checked.errors)
    return await render(request, "rules.html", status, **context)


async def rules_action(request: Request) -> Response:
    user = await require(request, admin=True)
    c = console(request)
    form = await request.form()
    source = _field(form, "source").replace("\r\n", "\n")
    action = _field(form, "action", "validate")
    checked = await c.validate(source)
    status = 200 if checked.ok else 422
    channel, text = _field(form, "channel", "sandbox") or "sandbox", _field(form, "text")
    subject, sender = _field(form, "subject"), _field(form, "sender")
    new = _field(form, "new_conversation") == "on"
    try_form = {"channel": channel, "text": text, "subject": subject, "sender": sender, "new": new}
    raw_count = _field(form, "count", "100") or "100"
    if not raw_count.isdigit():
        raise BadRequest("the number of messages to replay is a whole number")
    count = int(raw_count)
    extra: dict[str, Any] = {
        "checked": checked,
        "try_form": try_form,
        "replay_count": count,
        "comment": _field(form, "comment"),
        "diff": await c.diff_against_active(source),
    }
    # The try box is re-run on every action while it holds a text, so its answer stays on screen.
    if checked.ok and (action == "try" or text.strip()):
        msg = MessageIn(
            channel=channel,
            text=text,
            subject=subject or None,
            sender=dict(kv.split("=", 1) for kv in sender.split() if "=" in kv),
            new_conversation=new,
        )
        decision, _ = await c.try_message(source, msg)
        extra["decision"] = decision.to_dict() if decision else None
    if action == "replay" and checked.ok:
        rows, compared, _ = await c.replay(source, count)
        extra["replay"] = {"rows": rows, "compared": compared}
    elif action == "publish" and checked.ok:
        try:
            published = await c.publish(user, source, _field(form, "comment"))
        except RuleSetError as exc:
            return await _rules(request, source, 422, checked=Validation(None, exc.errors))
        return redirect(
            request,
            "/admin/rules/history",
            f"Published v{published.number} ({published.version}); workers switch within seconds.",
        )
    return await _rules(request, source, status, **extra)


async def history_page(request: Request) -> Response:
    await require(request, admin=True)
    c = console(request)
    history = await c.rules_history()
    active = await c.office.rules.active_number()
    diff = ""
    shown = request.query_params.get("diff", "")
    if shown.isdigit() and int(shown) > 1:
        try:
            diff = await c.rule_versions_diff(int(shown) - 1, int(shown))
        except SwitchboardError as exc:
            diff = str(exc)
    return await render(request, "rules_history.html", history=history, active=active, diff=diff, shown=shown)


async def rollback(request: Request) -> Response:
    user = await require(request, admin=True)
    form = await request.form()
    to = _field(form, "to")
    target = await console(request).rollback(user, int(to) if to.isdigit() else None)
    return redirect(request, "/admin/rules/history", f"v{target.number} ({target.version}) is in force again.")


# -- users, groups, canned responses -------------------------------------------------------------
async def users_page(request: Request, created: dict[str, str] | None = None) -> Response:
    admin = await require(request, admin=True)
    c = console(request)
    users = await c.users.all()
    groups = await c.all_groups()
    engine = await c.engine()
    members = {g: [u.name for u in users if not u.is_admin and g in u.groups] for g in groups}
    return await render(
        request,
        "users.html",
        users=users,
        groups=groups,
        group_names={g: info.name for g, info in engine.groups.items()},
        members=members,
        stats=await c.queue_stats(admin),
        canned=await c.canned(),
        created=created,
    )


def _role(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise BadRequest(f"role must be one of {', '.join(ROLES)}")


async def users_add(request: Request) -> Response:
    await require(request, admin=True)
    form = await request.form()
    name = _field(form, "name").strip().lower()
    groups = form.getlist("groups")
    password = await console(request).users.add(
        name,
        _role(_field(form, "role", "agent")),
        [g for g in groups if isinstance(g, str)],
        _field(form, "password") or None,
    )
    await audited(request, "user.add", name, _field(form, "role", "agent"))
    shown = {"what": f"One-time password for {name}", "secret": password} if not _field(form, "password") else None
    return await users_page(request, created=shown)


async def user_action(request: Request) -> Response:
    user = await require(request, admin=True)
    form = await request.form()
    users = console(request).users
    name = request.path_params["name"]
    action = request.path_params["action"]
    if action == "update":
        groups = [g for g in form.getlist("groups") if isinstance(g, str)]
        updated = await users.update(name, role=_role(_field(form, "role", "agent")), groups=groups)
        await audited(request, "user.update", name, f"{updated.role} {','.join(updated.groups)}")
        return redirect(request, "/admin/users", f"{name} updated.")
    if action == "password":
        one_time = secrets.token_urlsafe(12)
        await users.set_password(name, one_time, must_change=True)
        await audited(request, "user.password_reset", name)
        return await users_page(request, created={"what": f"One-time password for {name}", "secret": one_time})
    if action == "token":
        scope = _field(form, "scope", "reply")
        token = await users.issue_token(name, scope if scope in SCOPES else "reply")
        await audited(request, "token.issue", name, scope)
        return await users_page(request, created={"what": f"API token for {name} (shown once)", "secret": token})
    if action == "revoke":
        await users.revoke_token(name)
        await audited(request, "token.revoke", name)
        return redirect(request, "/admin/users", f"{name}'s API token revoked.")
    if action == "delete":
        if name == user.name:
            raise BadRequest("you cannot delete yourself")
        await users.delete(name)
        await audited(request, "user.delete", name)
        return redirect(request, "/admin/users", f"{name} deleted.")
    return Response("no such action", status_code=404)


async def canned_save(request: Request) -> Response:
    user = await require(request, admin=True)
    form = await request.form()
    c = console(request)
    if _field(form, "delete"):
        await c.delete_canned(user, _field(form, "delete"))
        return redirect(request, "/admin/users#canned", "Canned response deleted.")
    await c.set_canned(user, _field(form, "title"), _field(form, "text"))
    return redirect(request, "/admin/users#canned", "Canned response saved.")


async def answers_page(request: Request) -> Response:
    """The knowledge base's answers: the figures (router/stats.py answer_stats) and, for shadow
    mode, what the answerer would have sent beside what the agents did."""
    await require(request, admin=True)
    c = console(request)
    figures = answer_stats(await c.stats.totals())
    shadow = await c.office.shadow_answers(100)
    return await render(request, "answers.html", a=figures, shadow=shadow, mode=c.settings.answers.mode)


# -- impostors -----------------------------------------------------------------------------------
async def impostors_page(request: Request) -> Response:
    """Members whose names look like staff names, waiting for a moderator (router/impostors.py)."""
    await require(request, admin=True)
    cases = await console(request).office.impostors.open_cases(200)
    return await render(request, "impostors.html", cases=cases)


async def impostor_decide(request: Request) -> Response:
    user = await require(request, admin=True)
    case = request.path_params["case"]
    action = request.path_params["action"]
    decision = DECISIONS.get(action)
    if decision is None:
        return Response("no such action", status_code=404)
    await console(request).office.impostors.decide(case, decision, user.name)
    await audited(request, f"impostor.{action}", case)
    return redirect(request, "/admin/impostors", f"{case} {decision}.")


# -- senders (admission control, router/admission.py) --------------------------------------------
async def senders_page(request: Request) -> Response:
    """Banned and muted senders, and the form to ban or mute one."""
    user = await require(request, admin=True)
    c = console(request)
    blocks = await c.blocked_senders(user)
    return await render(request, "senders.html", blocks=blocks, poll_s=f"{c.settings.worker.rules_poll_s:g}")


async def senders_block(request: Request) -> Response:
    user = await require(request, admin=True)
    form = await request.form()
    action = _field(form, "action")
    block = await console(request).block_sender(
        user, action, _field(form, "sender"), _field(form, "for"), _field(form, "reason")
    )
    return redirect(request, "/admin/senders", f"{block.channel}:{block.sender} {block.mode}.")


async def senders_unban(request: Request) -> Response:
    user = await require(request, admin=True)
    sender = request.path_params["sender"]
    if not await console(request).unban_sender(user, sender):
        raise BadRequest(f"{sender} is neither banned nor muted")
    return redirect(request, "/admin/senders", f"{sender} unbanned.")


async def audit_page(request: Request) -> Response:
    await require(request, admin=True)
    before = request.query_params.get("before") or None
    entries = await console(request).audit.recent(200, before)
    return await render(request, "audit.html", entries=entries)


# -- dashboard -----------------------------------------------------------------------------------
def chart(samples: list[dict[str, Any]], width: int = 760, height: int = 180) -> dict[str, Any]:
    """Polylines for an inline SVG: total queued, replies to send, and in/out per minute."""
    pad = 30
    if len(samples) < 2:
        return {"width": width, "height": height, "series": [], "ticks": [], "empty": True}
    t0, t1 = samples[0]["at"], samples[-1]["at"]
    span = max(1.0, t1 - t0)
    queued = [(s["at"], float(sum(s["depth"].values()))) for s in samples]
    outbox = [(s["at"], float(s.get("outbox", 0))) for s in samples]  # older samples lack it
    rates: dict[str, list[tuple[float, float]]] = {"in": [], "out": []}
    for a, b in itertools.pairwise(samples):
        dt = max(1.0, b["at"] - a["at"]) / 60
        for k in rates:
            rates[k].append((b["at"], max(0.0, (b[k] - a[k]) / dt)))
    top = max([1.0] + [v for _, v in queued + outbox] + [v for r in rates.values() for _, v in r])

    def points(series: list[tuple[float, float]]) -> str:
        return " ".join(
            f"{pad + (t - t0) / span * (width - 2 * pad):.1f},{height - pad - v / top * (height - 2 * pad):.1f}"
            for t, v in series
        )

    return {
        "width": width,
        "height": height,
        "empty": False,
        "top": top,
        "pad": pad,
        "series": [
            {"name": "queued (all groups)", "cls": "s-queued", "points": points(queued)},
            {"name": "replies to send", "cls": "s-outbox", "points": points(outbox)},
            {"name": "in / min", "cls": "s-in", "points": points(rates["in"])},
            {"name": "out / min", "cls": "s-out", "points": points(rates["out"])},
        ],
        "span_min": span / 60,
    }


async def dashboard(request: Request) -> Response:
    await require(request, admin=True)
    c = console(request)
    stats = await c.dashboard()
    samples = stats["samples"]
    rates = {"in": 0.0, "out": 0.0}
    if len(samples) >= 2:
        a, b = samples[max(0, len(samples) - 5)], samples[-1]
        minutes = max(1.0, b["at"] - a["at"]) / 60
        rates = {k: (b[k] - a[k]) / minutes for k in rates}
    tags = stats["top_tags"]
    return await render(
        request,
        "dashboard.html",
        stats=stats,
        rates=rates,
        tags=tags,
        tag_max=max([1] + [n for _, n in tags]),
        chart=chart(samples),
        breaches=sum(q["overdue"] for q in stats["queues"].values()),
        depth=sum(q["depth"] for q in stats["queues"].values()),
        workers=sum(1 for k in stats["health"] if k.startswith("worker:")),
    )


#: The supervisors' view: how far ahead it looks by default, and at most how far (minutes).
SLA_WATCH_M = 30
SLA_WATCH_MAX_M = 1440
#: Due conversations read per shard (the page stays bounded however long the backlog).
SLA_WATCH_LIMIT = 200


async def sla_watch(request: Request) -> Response:
    await require(request, admin=True)
    raw = request.query_params.get("within", str(SLA_WATCH_M))
    if not raw.isdigit() or not 1 <= int(raw) <= SLA_WATCH_MAX_M:
        raise BadRequest(f"within: minutes from 1 to {SLA_WATCH_MAX_M}")
    within = int(raw)
    rows = await console(request).sla_watch(within * 60, SLA_WATCH_LIMIT)
    return await render(request, "sla_watch.html", rows=rows, within_m=within, limit=SLA_WATCH_LIMIT)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/rules", rules_page, methods=["GET"]),
        Route("/admin/rules", rules_action, methods=["POST"]),
        Route("/admin/rules/history", history_page),
        Route("/admin/rules/rollback", rollback, methods=["POST"]),
        Route("/admin/users", users_page, methods=["GET"]),
        Route("/admin/users", users_add, methods=["POST"]),
        Route("/admin/users/{name}/{action}", user_action, methods=["POST"]),
        Route("/admin/canned", canned_save, methods=["POST"]),
        Route("/admin/dashboard", dashboard),
        Route("/admin/sla", sla_watch),
        Route("/admin/audit", audit_page),
        Route("/admin/answers", answers_page),
        Route("/admin/impostors", impostors_page),
        Route("/admin/impostors/{case}/{action}", impostor_decide, methods=["POST"]),
        Route("/admin/senders", senders_page, methods=["GET"]),
        Route("/admin/senders", senders_block, methods=["POST"]),
        Route("/admin/senders/{sender}/unban", senders_unban, methods=["POST"]),
    ]
