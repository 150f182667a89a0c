"""The knowledge base's JSON API (``/api/kb`` for admins; a conversation's suggestions for its
agents): the same operations as the admin pages (router/console/kbviews.py), with the ``Admin``
and ``Caller`` dependencies of api.py, ``Idempotency-Key`` on the writes, and a refused knowledge
base answered 422 with every problem (``{"error", "errors"}``, router/console/app.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.errors import BadRequest, NotFound
from router.kbstore import files_of

from .api import Admin, Caller, RollbackIn, Service, _Body, idempotency
from .knowledge import Checked, article_rows

router = APIRouter(prefix="/api")


class KBChangeIn(_Body):
    files: dict[str, str] = Field(
        default_factory=dict, description="<article id>/<lang>.md -> Markdown with front matter: added or replaced"
    )
    remove: list[str] = Field(default_factory=list, description="files, or whole articles by id, to take out")
    whole: bool = Field(
        False, description="true: files are the whole knowledge base (false: a change to the one in force)"
    )


class KBPublishIn(KBChangeIn):
    comment: str = Field("", max_length=2000)


def _checked(checked: Checked) -> dict[str, Any]:
    base = checked.base
    return {
        "valid": checked.ok,
        "errors": checked.errors,
        "digest": base.digest if base is not None else None,
        "articles": len(base) if base is not None else None,
    }


@router.get("/kb", tags=["knowledge base"], summary="The knowledge base in force: version and articles")
async def kb_in_force(user: Admin, c: Service) -> Response:
    version, base = await c.kb.in_force(user)
    return JSONResponse(
        {
            "published": version.summary() if version is not None else None,
            "digest": base.digest,
            "articles": article_rows(base),
        }
    )


@router.get("/kb/articles/{article_id}", tags=["knowledge base"], summary="One article: its variants' files")
async def kb_article(article_id: str, user: Admin, c: Service) -> Response:
    _, base = await c.kb.in_force(user)
    if article_id not in base.ids():
        raise NotFound(f"article {article_id}")
    a = base.get(article_id)
    every = files_of(base)
    files = {lang: every[f"{a.id}/{lang}.md"] for lang in a.variants}
    return JSONResponse({"id": a.id, "tags": list(a.tags), "groups": list(a.groups), "auto": a.auto, "files": files})


@router.post("/kb/validate", tags=["knowledge base"], summary="Validate a change (or a whole base): every problem")
async def kb_validate(user: Admin, c: Service, data: KBChangeIn) -> Response:
    return JSONResponse(_checked(await c.kb.check(user, data.files, data.remove, whole=data.whole)))


@router.post("/kb/publish", tags=["knowledge base"], summary="Validate and publish; every process follows")
async def kb_publish(request: Request, user: Admin, c: Service, data: KBPublishIn) -> Response:
    checked = await c.kb.check(user, data.files, data.remove, whole=data.whole)
    version = await c.kb.publish(user, checked, data.comment, idempotency(request, user))
    return JSONResponse(version.summary(), status_code=201)


@router.get("/kb/history", tags=["knowledge base"], summary="Publish and rollback log, newest first")
async def kb_history(user: Admin, c: Service) -> Response:
    return JSONResponse({"history": await c.kb.history(user)})


@router.get("/kb/versions/{number:int}", tags=["knowledge base"], summary="One published version with its files")
async def kb_version(number: int, user: Admin, c: Service) -> Response:
    v = await c.kb.version(user, number)
    return JSONResponse(v.summary() | {"files": v.files})


@router.get("/kb/diff", tags=["knowledge base"], summary="Per file, the unified diff of two versions (?a=N&b=M)")
async def kb_diff(request: Request, user: Admin, c: Service) -> Response:
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not (a.isdigit() and b.isdigit()):
        raise BadRequest("name two published versions: ?a=N&b=M")
    return JSONResponse({"diff": await c.kb.diff(user, int(a), int(b))})


@router.post("/kb/rollback", tags=["knowledge base"], summary="Put an earlier version in force (the one before)")
async def kb_rollback(request: Request, user: Admin, c: Service, data: RollbackIn) -> Response:
    version = await c.kb.rollback(user, data.to, idempotency(request, user))
    return JSONResponse(version.summary())


@router.get(
    "/conversations/{conv_id}/suggestions",
    tags=["conversations"],
    summary="The top three articles for the latest message, in the user's language (202: still being prepared)",
)
async def suggestions(conv_id: str, user: Caller, c: Service) -> Response:
    conv, history, _ = await c.detail(user, conv_id)
    found = await c.kb.suggestions(conv, history)
    if found is None:
        return JSONResponse({"status": "building"}, status_code=202)
    return JSONResponse(found)
