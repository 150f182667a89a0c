"""Admin pages of the knowledge base: the articles, one variant's editor (validate, publish,
remove), history with per-file diffs and rollback, and a new article from an agent's reply.

The editor is the variant's Markdown file with its front matter in a textarea, not a form of
fields: it is the very format of ``kb export``/``kb import`` and of the shipped articles, so an
admin sees and edits what is stored, and the loader's errors (``path: reason``) name the fields
as written, with no second set of rules in a form to keep in step with the loader.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.errors import SwitchboardError
from router.kbstore import files_of

from .http import console, require
from .knowledge import Checked, article_rows, path_of
from .pages import redirect, render

NEW_ARTICLE = """---
id: new-article
lang: en
title: A short title
tags: []
groups: [general]
auto: false
---
The answer.
"""


def _field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value if isinstance(value, str) else default


async def kb_page(request: Request) -> Response:
    user = await require(request, admin=True)
    version, base = await console(request).kb.in_force(user)
    return await render(request, "kb.html", version=version, digest=base.digest, articles=article_rows(base))


async def edit_page(request: Request) -> Response:
    """``?path=ID/LANG.md``: that variant; ``?conversation=C&reply=R``: a new article from an
    agent's reply; neither: a new article."""
    user = await require(request, admin=True)
    c = console(request)
    q = request.query_params
    path = q.get("path", "")
    if path:
        text = await c.kb.file(user, path)
    elif q.get("conversation") and q.get("reply"):
        conv, history, _ = await c.detail(user, q["conversation"])
        text = c.kb.draft_from_reply(user, conv, history, q["reply"])
    else:
        text = NEW_ARTICLE
    return await _editor(request, path, text)


async def _editor(request: Request, path: str, text: str, status: int = 200, **extra: Any) -> Response:
    context: dict[str, Any] = {"path": path, "text": text, "checked": None, "comment": ""} | extra
    return await render(request, "kb_edit.html", status, **context)


async def edit_action(request: Request) -> Response:
    user = await require(request, admin=True)
    c = console(request)
    form = await request.form()
    path = _field(form, "path")
    text = _field(form, "text").replace("\r\n", "\n")
    action = _field(form, "action", "validate")
    comment = _field(form, "comment")
    if action == "remove":
        checked = await c.kb.check(user, {}, [path])
    else:
        # A new article's file is named by its front matter; an existing one keeps its path (the
        # loader reports an id or lang that no longer matches it).
        target = path or path_of(text)
        _, base = await c.kb.in_force(user)
        if not path and target in files_of(base):
            checked = Checked({}, None, [f"{target}: exists already: edit it instead (or change id or lang)"])
        else:
            checked = await c.kb.check(user, {target: text})
    if checked.ok and action in ("publish", "remove"):
        version = await c.kb.publish(user, checked, comment)
        done = f"Published v{version.number} ({version.digest}); every process follows within seconds."
        return redirect(request, "/admin/kb/history", done)
    return await _editor(request, path, text, 200 if checked.ok else 422, checked=checked, comment=comment)


async def history_page(request: Request) -> Response:
    user = await require(request, admin=True)
    c = console(request)
    history = await c.kb.history(user)
    active = await c.kb.store.active_number()
    shown = request.query_params.get("diff", "")
    diff: dict[str, str] = {}
    error = ""
    if shown.isdigit() and int(shown) > 1:
        try:
            diff = await c.kb.diff(user, int(shown) - 1, int(shown))
        except SwitchboardError as exc:
            error = str(exc)
    return await render(request, "kb_history.html", history=history, active=active, diff=diff, shown=shown, error=error)


async def rollback(request: Request) -> Response:
    user = await require(request, admin=True)
    form = await request.form()
    to = _field(form, "to")
    version = await console(request).kb.rollback(user, int(to) if to.isdigit() else None)
    return redirect(request, "/admin/kb/history", f"v{version.number} ({version.digest}) is in force again.")


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/kb", kb_page, methods=["GET"]),
        Route("/admin/kb/edit", edit_page, methods=["GET"]),
        Route("/admin/kb/edit", edit_action, methods=["POST"]),
        Route("/admin/kb/history", history_page, methods=["GET"]),
        Route("/admin/kb/rollback", rollback, methods=["POST"]),
    ]
