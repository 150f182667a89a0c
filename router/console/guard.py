"""The HTTP connection guard: a cap on open connections and a deadline for each request to arrive.

uvicorn (0.55, h11) has no timeout for a request that never finishes arriving: its keep-alive
timer runs only between requests and stops at the first byte of the next one, so a client that
sends half a header line holds its socket — and a file descriptor — for ever, and 20,000 of them
exhaust the process's descriptors (then Redis connections, log files and ``/healthz`` fail too).
``limit_concurrency`` does not help: it answers 503 to complete requests, it never closes a
connection that is still sending one.

So the console serves h11 through ``guarded_protocol``, a subclass that:

- arms a deadline when a connection opens and again when a response completes (the next request
  on a kept-alive connection): headers *and* body must have arrived by then (``request_timeout``);
  a request still arriving is closed (with a 408 when its headers were read), a request whose body
  arrived is never interrupted, however long the app takes (live streams);
- keeps at most ``max_connections`` open: one more closes the oldest connection that sent part
  of a request and stopped (a client sends its headers at once), else the oldest one that sent
  nothing for a second (or idles between two requests), so that a flood of slow clients makes
  room for a new client instead of locking it out; when there is none, the new one is closed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_ARRIVING = (h11.IDLE, h11.SEND_BODY)
GRACE_S = 1.0


class GuardedH11Protocol(H11Protocol):
    """Set by ``guarded_protocol``: one registry and limits per server."""

    max_connections: int
    request_timeout: float
    # Connections that may be waiting for a request, oldest first (entries are re-checked when
    # taken: one whose request arrived since is skipped, so upkeep stays O(1) a connection), and
    # those of them that sent part of a request.
    waiting: OrderedDict[GuardedH11Protocol, None]
    partial: OrderedDict[GuardedH11Protocol, None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._since = 0.0  # when the current request began to be awaited

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            victim = self._oldest_arriving()
            if victim is None:
                transport.close()
                return
            victim.transport.close()
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.waiting.pop(self, None)
        self.partial.pop(self, None)
        super().connection_lost(exc)

    def _arriving(self) -> bool:
        busy = self.cycle is not None and (self.cycle.response_started and not self.cycle.response_complete)
        return self.conn.their_state in _ARRIVING and not busy and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._arriving() and self not in self.partial:
            self.partial[self] = None

    def _oldest_arriving(self) -> GuardedH11Protocol | None:
        # First one that sent part of a request and stopped: a client sends its headers at once.
        while self.partial:
            proto, _ = self.partial.popitem(last=False)
            if proto is not self and proto._arriving():
                return proto
        # Else one that had time to send its request: asyncio accepts connections in batches (up
        # to the backlog) before any of them is read, and a client whose request is in the socket
        # buffer must not be taken for a slow one.
        grace = min(GRACE_S, self.request_timeout / 2)
        while self.waiting:
            proto = next(iter(self.waiting))
            if proto is not self and proto._arriving() and self.loop.time() - proto._since < grace:
                return None  # the oldest is still young: so are the others
            del self.waiting[proto]
            if proto is not self and proto._arriving():
                return proto
        return None

    def _arm(self) -> None:
        self._disarm()
        self.partial.pop(self, None)
        self._since = self.loop.time()
        self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)
        self.waiting[self] = None
        self.waiting.move_to_end(self)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        self.waiting.pop(self, None)
        if not self._arriving():
            return  # the request arrived: the app has it, however long it takes
        if self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.SEND_RESPONSE:
            self._send_408()
        self.transport.close()

    def _send_408(self) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        body = b"the request did not arrive in time"
        for event in (h11.Response(status_code=408, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")


def guarded_protocol(max_connections: int, request_timeout: float) -> type[GuardedH11Protocol]:
    """A protocol class for one server (uvicorn ``Config(http=...)``) with its own registry."""
    return type(
        "GuardedH11",
        (GuardedH11Protocol,),
        {
            "max_connections": max_connections,
            "request_timeout": request_timeout,
            "waiting": OrderedDict(),
            "partial": OrderedDict(),
        },
    )
