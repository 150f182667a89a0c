"""The public page of an e-mail button: ``/a/{token}`` (router/links.py), no login.

GET shows what the button says and a confirmation button; only the POST records the press. Mail
scanners and link previews (Outlook Safe Links, Gmail's image proxy, corporate gateways) open
every link of a message before the user does: a press recorded on GET would answer "this solved
it" for users who never clicked. A scanner does not submit forms.

A tampered or foreign link gets 400, an expired one 410, both as a page that says so.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.links import Link, LinkExpired, LinkInvalid

from .http import console
from .pages import render


async def _page(request: Request, *, confirm: bool) -> Response:
    token = request.path_params["token"]
    c = console(request)
    link: Link
    try:
        link = await c.press_link(token) if confirm else c.open_link(token)
    except LinkExpired:
        return await render(request, "press.html", 410, state="expired", label="")
    except LinkInvalid:
        return await render(request, "press.html", 400, state="invalid", label="")
    response = await render(request, "press.html", state="done" if confirm else "confirm", label=link.label)
    # The token is a capability: no caching, and no Referer to wherever the page links.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def show(request: Request) -> Response:
    return await _page(request, confirm=False)


async def confirm(request: Request) -> Response:
    return await _page(request, confirm=True)


def routes() -> list[BaseRoute]:
    return [
        Route("/a/{token}", show, methods=["GET"]),
        Route("/a/{token}", confirm, methods=["POST"]),
    ]
