"""Live updates: the group event streams (``events:{group}``) as Server-Sent Events.

``GET /api/events?group=A&group=B`` (default: every group of the caller). Access is checked when
the stream opens — an agent asking for another group gets 403 — and again every few seconds while
it runs, so a stream ends soon after its user loses the group, is deleted, or logs out.

Each SSE ``id`` is the position in every stream (``group=entry&…``): a browser that reconnects
sends it back as ``Last-Event-ID`` and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from urllib.parse import parse_qsl, urlencode

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from router.accounts import User

from .access import require_group
from .http import authenticate, console
from .service import Console

BLOCK_MS = 1000  # short, so that a closing server or a revoked user ends the stream quickly
RECHECK_S = 5.0
KEEPALIVE_S = 15.0


def _positions(request: Request, streams: Iterable[str]) -> dict[str, str]:
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
    known = dict(parse_qsl(last))
    return {name: known[name] for name in streams if name in known}


async def _still_allowed(request: Request, user: User, groups: list[str]) -> bool:
    # Re-read the session/token and the user: logout, deletion or a group change take effect.
    request.state.auth_done = False
    current = await authenticate(request)
    return current is not None and current.name == user.name and all(current.sees(g) for g in groups)


async def events(request: Request, user: User) -> Response:
    """The SSE endpoint for an authenticated ``user`` (see the module docstring)."""
    c = console(request)
    asked = request.query_params.getlist("group")
    groups = asked or await c.groups_of(user)
    for g in groups:
        require_group(user, g)
    start = _positions(request, c.office.events.streams(groups))
    # Streams are read from now on, unless the browser tells where it was.
    start = {**await c.office.events.ends(groups), **start}
    stopping: asyncio.Event = request.app.state.stopping
    if c.open_streams >= c.web.max_streams:
        return Response("too many live streams; retry later", status_code=503, headers={"Retry-After": "5"})
    if c.streams_of[user.name] >= c.web.max_streams_per_user:
        # One user (or one leaked token) must not take every slot from the others.
        return Response("too many live streams of yours; close one", status_code=429, headers={"Retry-After": "5"})
    # Taken now, with no await since the checks: requests arriving together each see the others'.
    c.open_streams += 1
    c.streams_of[user.name] += 1
    held = True

    def release() -> None:
        nonlocal held
        if held:
            held = False
            c.open_streams -= 1
            c.streams_of[user.name] -= 1
            if not c.streams_of[user.name]:
                del c.streams_of[user.name]

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in _events(c, request, user, groups, start, stopping):
                yield chunk
        finally:
            release()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        # Also when the stream never started (the client left first); release is idempotent.
        background=BackgroundTask(release),
    )


async def _events(
    c: Console,
    request: Request,
    user: User,
    groups: list[str],
    start: dict[str, str],
    stopping: asyncio.Event,
) -> AsyncIterator[str]:
    """The stream's body: events from ``start`` on, until the server stops or access is lost."""
    pos = dict(start)
    checked = sent = time.monotonic()
    yield "retry: 2000\n\n"
    while not stopping.is_set():
        if time.monotonic() - checked >= RECHECK_S:
            checked = time.monotonic()
            if not await _still_allowed(request, user, groups):
                yield "event: revoked\ndata: {}\n\n"
                return
        if not groups:
            await asyncio.sleep(BLOCK_MS / 1000)
            continue
        for event in await c.office.events.after(pos, BLOCK_MS):
            pos[event.stream] = event.entry
            yield f"id: {urlencode(pos)}\nevent: update\ndata: {json.dumps(event.to_dict())}\n\n"
            sent = time.monotonic()
        if time.monotonic() - sent >= KEEPALIVE_S:
            sent = time.monotonic()
            yield ": keepalive\n\n"
