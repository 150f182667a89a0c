"""Rendering helpers for the server-side HTML: Jinja2 with autoescaping, flashes, redirects.

Autoescaping is on for every template (``select_autoescape`` on .html), so a message's text can
only ever appear as text; nothing in the templates marks user data ``|safe``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .http import authenticate, set_cookie

HERE = Path(__file__).resolve().parent
FLASH_COOKIE = "sb_flash"


def _ago(ms: float | int | None) -> str:
    if not ms:
        return "-"
    seconds = max(0.0, time.time() - float(ms) / 1000)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def _clock(ms: float | int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ms or 0) / 1000))


def _due(ms: float | int | None) -> str:
    if not ms:
        return "-"
    left = float(ms) / 1000 - time.time()
    if left < 0:
        return f"overdue {_ago(ms)}"
    if left < 5400:
        return f"in {left / 60:.0f}m"
    return f"in {left / 3600:.1f}h"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return _ago(time.time() * 1000 - value * 1000)


def _hours(seconds: float | None) -> str:
    """A duration of the reports (business seconds) as hours and minutes: "2h 05m", "14m"."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


# Bidirectional controls (embeddings, overrides, isolates, marks): in a customer's text or file
# name they reorder what is shown — "invoice\u202efdp.exe" reads as "invoiceexe.pdf".
_BIDI = {code: f"[U+{code:04X}]" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def neutralise_bidi(value: Any) -> Any:
    """Every value a template prints, with bidi controls shown as ``[U+202E]`` instead of applied
    (Jinja's ``finalize``: no template can forget it)."""
    return value.translate(_BIDI) if isinstance(value, str) else value


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        finalize=neutralise_bidi,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html", "xml", "svg"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ago=_ago, clock=_clock, due=_due, seconds=_seconds, hours=_hours, percent=_percent)
    return Jinja2Templates(env=env)


async def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """Render ``template`` with the user, the CSRF token and a pending flash message."""
    templates: Jinja2Templates = request.app.state.templates
    user = await authenticate(request)
    flash = request.cookies.get(FLASH_COOKIE, "")
    kind, _, text = unquote(flash).partition(":")
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf": getattr(request.state, "csrf", ""),
            "flash": {"kind": kind, "text": text} if text else None,
            "path": request.url.path,
            "now_ms": time.time() * 1000,
            **context,
        },
        status_code=status_code,
    )
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(request: Request, url: str, message: str = "", kind: str = "ok") -> Response:
    """Post/redirect/get, with an optional message shown once on the next page."""
    response = RedirectResponse(url, status_code=303)
    if message:
        # The text goes through a cookie value: keep it short and cookie-safe.
        set_cookie(request, response, FLASH_COOKIE, quote(f"{kind}:{message[:300]}"), max_age=60)
    return response


def login_url(request: Request) -> str:
    return "/login?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
