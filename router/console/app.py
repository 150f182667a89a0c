"""The ASGI application: ``create_app(runtime, settings)``, served by uvicorn (see server.py).

A FastAPI application: the JSON API's handlers (api.py) are FastAPI routes, with the OpenAPI
description generated from them; the pages, ``/metrics``, the probes and the static files are
plain Starlette routes beside them, under the same middleware and error handlers.

Errors map to status codes in one place: NotFound 404, Conflict 409, Forbidden 403 (CSRF too),
Unauthorized 401 (pages redirect to the login), RateLimited 429, BadRequest 400, an analytics store
the reports cannot read here 503 (with the reason), a rule set or a knowledge base that does not
validate 422 (with every error), a body that does not validate 422 (415 when it is not JSON). API
paths get JSON (``{"error": ...}``), pages an HTML error page.
Anything else is a bug: 500, logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from router.accounts import Forbidden, RateLimited, Unauthorized
from router.config import Settings
from router.errors import AppendRefused, BadRequest, Conflict, NotFound
from router.kbstore import KBRefused
from router.lifecycle import keep_running, wait_or_stop
from router.redis import REDIS_UNAVAILABLE
from router.runtime import Runtime
from router.simulator import SandboxPort
from router.weekly import Opener, StoreUnreadable
from rules import RuleSetError

from . import admin, api, incidents, kbapi, kbviews, metrics, presses, reportviews, views
from .http import PasswordChangeRequired, SecurityHeaders, is_api
from .pages import HERE, login_url, make_templates, render
from .service import Console

log = logging.getLogger("switchboard.console")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    """Readiness: Redis answers (the console can serve nothing without it)."""
    c: Console = request.app.state.console
    try:
        await asyncio.wait_for(c.office.ping(), 2)
    except Exception as exc:  # any failure means "not ready", and says why
        return JSONResponse({"ok": False, "redis": str(exc) or type(exc).__name__}, status_code=503)
    return JSONResponse({"ok": True, "redis": "ok"})


async def _error(request: Request, status: int, message: str, **extra: object) -> Response:
    if is_api(request):
        return JSONResponse({"error": message, **extra}, status_code=status)
    return await render(request, "error.html", status, status=status, message=message)


async def _retry_later(request: Request, status: int, message: str, after_s: int = 5) -> Response:
    """``_error`` telling the client when to come back (``Retry-After``, seconds)."""
    response = await _error(request, status, message)
    response.headers["Retry-After"] = str(after_s)
    return response


async def _handle(request: Request, exc: Exception) -> Response:
    api_call = is_api(request)
    if isinstance(exc, PasswordChangeRequired) and not api_call:
        return RedirectResponse("/password", status_code=303)
    if isinstance(exc, Unauthorized):
        if not api_call:
            return RedirectResponse(login_url(request), status_code=303)
        return await _error(request, 401, str(exc))
    if isinstance(exc, Forbidden):
        return await _error(request, 403, str(exc))
    if isinstance(exc, NotFound):
        return await _error(request, 404, f"not found: {exc}")
    if isinstance(exc, Conflict):
        return await _error(request, 409, str(exc))
    if isinstance(exc, AppendRefused):  # the inbox is full or Redis out of memory: try again later
        return await _retry_later(request, 503, str(exc))
    if isinstance(exc, REDIS_UNAVAILABLE):
        # No pool connection within web.redis_wait_s (a burst), Redis away, a failover: not a bug.
        log.warning("console: Redis unavailable for %s %s: %s", request.method, request.url.path, exc)
        return await _retry_later(request, 503, "busy: the data store did not answer in time; retry later")
    if isinstance(exc, RateLimited):
        return await _retry_later(request, 429, str(exc), exc.retry_after)
    if isinstance(exc, ClientDisconnect):  # gone mid-body (or cut at the request deadline): nobody to answer
        return Response(status_code=400)
    if isinstance(exc, RequestValidationError):
        return await _invalid_body(request, exc)
    if isinstance(exc, RuleSetError):
        return await _error(request, 422, "the rule set does not validate", errors=[str(e) for e in exc.errors])
    if isinstance(exc, KBRefused):
        return await _error(request, 422, "the knowledge base does not validate", errors=exc.errors)
    if isinstance(exc, HTTPException):  # no such path or method
        return await _error(request, exc.status_code, str(exc.detail))
    if isinstance(exc, BadRequest):
        return await _error(request, 400, str(exc).strip("'\""))
    if isinstance(exc, StoreUnreadable):  # the reports: another process writes the store, or none yet
        return await _error(request, 503, f"the analytics store cannot be read from this process: {exc}")
    # A bug: Starlette's ServerErrorMiddleware sends this answer and re-raises, so uvicorn logs it.
    return await _error(request, 500, "internal error")


async def _invalid_body(request: Request, exc: RequestValidationError) -> Response:
    # FastAPI hands a body that is not JSON to the model as bytes: say what to send instead (415).
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        return await _error(request, 415, f"send application/json, not {kind}")
    # The body's own locations, as the model reports them (FastAPI prefixes them with "body").
    details = [
        {"loc": list(e["loc"][1:] if e["loc"][:1] == ("body",) else e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    return await _error(request, 422, "invalid request body", details=details)


async def _sampler(console: Console, stopping: asyncio.Event) -> None:
    """The dashboard's time series: one sample per interval across all console processes."""

    async def step() -> None:
        await console.take_sample()
        await wait_or_stop(stopping, console.web.sample_s)

    # The dashboard chart is not worth crashing the console for: any failure is retried.
    await keep_running(step, stopping, what="taking a dashboard sample", retry_on=(Exception,))


def create_app(
    runtime: Runtime, settings: Settings, sandbox: SandboxPort | None = None, store: Opener | None = None
) -> FastAPI:
    """The console and API over an entered ``Runtime``; its lifespan starts and stops the sampler.
    ``sandbox``: the sandbox channel behind the simulator (None: the simulator answers 404);
    ``store``: how the reports read the analytics store (None: read-only, router/weekly.py)."""
    console = Console(runtime, settings, sandbox, store)
    stopping = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await console.start()
        if where := await console.first_admin():
            log.warning(
                "created console user 'admin'; its one-time password is in %s (readable by this account "
                "only, valid for %d h, to be changed at first login)",
                where,
                console.web.otp_ttl_s // 3600,
            )
        sampler = asyncio.create_task(_sampler(console, stopping))
        try:
            yield
        finally:
            stopping.set()
            await sampler
            await console.stop()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics.metrics),
        *views.routes(),
        *admin.routes(),
        *presses.routes(),
        *kbviews.routes(),
        *incidents.routes(),
        *reportviews.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
        exc: _handle
        for exc in (
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            RateLimited,
            BadRequest,
            StoreUnreadable,
            RuleSetError,
            KBRefused,
            AppendRefused,
            *REDIS_UNAVAILABLE,
            ClientDisconnect,
            RequestValidationError,
            HTTPException,
            Exception,
        )
    }
    app = FastAPI(
        title="Switchboard console API",
        version="1",
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers=handlers,
        lifespan=lifespan,
        # Public, like any API description: it names endpoints, not data. No docs pages: the CSP
        # allows no third-party scripts.
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(api.router)
    app.include_router(kbapi.router)
    app.state.console = console
    app.state.stopping = stopping
    app.state.templates = make_templates()
    return app
