"""Incident pages (router/incidents.py, docs/incidents.md): admins open an incident, edit its
texts and matcher, resolve it with a resolution text and see its linked conversations and history;
agents see one row per incident in their group's queue and take collapsed conversations from it.
The store records the audit entries (actor: the console user)."""

from __future__ import annotations

from typing import Any

import yaml
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.console.access import require_group
from router.errors import BadRequest, Conflict
from router.incidents import MODES

from .http import console, require
from .pages import redirect, render

#: The languages the forms have a field for; others go in "more" as ``lang: text`` lines.
FORM_LANGS = ("en", "zh")


def _field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def texts_of(form: FormData, prefix: str) -> dict[str, str]:
    """The texts of a form: ``{prefix}_en``, ``{prefix}_zh``, and ``lang: text`` lines of ``{prefix}_more``."""
    texts = {lang: _field(form, f"{prefix}_{lang}").strip() for lang in FORM_LANGS}
    for line in _field(form, f"{prefix}_more").splitlines():
        lang, sep, text = line.partition(":")
        if not line.strip():
            continue
        if not sep:
            raise BadRequest(f"more languages: 'lang: text' on each line, not {line!r}")
        texts[lang.strip()] = text.strip()
    return {lang: text for lang, text in texts.items() if text}


def matcher_of(form: FormData) -> Any:
    try:
        return yaml.safe_load(_field(form, "matcher"))
    except yaml.YAMLError as exc:
        raise BadRequest(f"matcher: not YAML: {exc}") from None


async def incidents_page(request: Request, error: str = "", form: dict[str, str] | None = None) -> Response:
    await require(request, admin=True)
    c = console(request)
    found = await c.office.incidents.recent()
    suggested = await c.office.surges()
    status = 400 if error else 200
    return await render(
        request,
        "incidents.html",
        status,
        incidents=found,
        suggested=suggested,
        error=error,
        # "Open one" of a suggestion comes with its title.
        form=form or {"title": request.query_params.get("title", "")},
    )


async def incident_open(request: Request) -> Response:
    user = await require(request, admin=True)
    form = await request.form()
    try:
        inc = await console(request).office.incidents.open(
            _field(form, "title"), matcher_of(form), texts_of(form, "text"), user.name
        )
    except BadRequest as exc:
        kept = {k: _field(form, k) for k in ("title", "matcher", "text_en", "text_zh", "text_more")}
        return await incidents_page(request, str(exc), kept)
    return redirect(
        request, f"/admin/incidents/{inc.id}", f"Incident #{inc.id} opened: matching conversations are linked."
    )


async def incident_page(request: Request) -> Response:
    await require(request, admin=True)
    c = console(request)
    store = c.office.incidents
    inc = await store.get(request.path_params["incident"])
    groups = await c.all_groups()
    linked = await c.office.conversations.get_many(await store.linked(inc.id, 200))
    return await render(
        request,
        "incident.html",
        inc=inc,
        counts=await store.counts(inc.id, groups),
        history=await store.history(inc.id),
        linked=linked,
        matcher=yaml.safe_dump(inc.when, allow_unicode=True, sort_keys=False),
        more="\n".join(f"{k}: {v}" for k, v in inc.texts.items() if k not in FORM_LANGS),
        modes=MODES,
    )


async def incident_action(request: Request) -> Response:
    user = await require(request, admin=True)
    store = console(request).office.incidents
    incident_id, action = request.path_params["incident"], request.path_params["action"]
    form = await request.form()
    here = f"/admin/incidents/{incident_id}"
    try:
        if action == "update":
            await store.update(
                incident_id, user.name, title=_field(form, "title"), texts=texts_of(form, "text"), when=matcher_of(form)
            )
            return redirect(request, here, "Incident updated: conversations linked from now on get the new text.")
        if action == "resolve":
            await store.resolve(incident_id, user.name, texts_of(form, "resolution"), _field(form, "mode"))
            return redirect(request, here, "Resolving: the resolution goes to every linked conversation.")
    except (BadRequest, Conflict) as exc:
        return redirect(request, here, str(exc), "warn")
    return Response("no such action", status_code=404)


async def incident_claim(request: Request) -> Response:
    """An agent takes the most urgent conversation of their group collapsed under the incident."""
    user = await require(request)
    form = await request.form()
    group = _field(form, "group")
    require_group(user, group)
    incident_id = request.path_params["incident"]
    cid = await console(request).office.incidents.claim(incident_id, group, user.name)
    if cid is None:
        return redirect(request, f"/queues?group={group}", "Nothing left under that incident.", "warn")
    return redirect(request, f"/conversations/{cid}", f"Conversation #{cid} (incident #{incident_id}) is yours.")


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/incidents", incidents_page, methods=["GET"]),
        Route("/admin/incidents", incident_open, methods=["POST"]),
        Route("/admin/incidents/{incident}", incident_page, methods=["GET"]),
        Route("/admin/incidents/{incident}/{action}", incident_action, methods=["POST"]),
        Route("/incidents/{incident}/claim", incident_claim, methods=["POST"]),
    ]
