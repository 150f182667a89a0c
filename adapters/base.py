"""What every channel adapter shares: the ``Adapter`` service and its health state.

An adapter
- turns platform messages into ``Envelope`` and appends them with ``ChannelContext.append``,
  confirming a message to its platform only after the append returned;
- sends the replies of its channel's outbox through ``ChannelContext.outbox(channel)``, raising
  ``PermanentFailure`` / ``TemporaryFailure`` from its send function so the outcome is recorded;
- runs its long-running loops with ``keep_running`` (router.channel), the one retry loop;
- reports its health (a ``Health``) for ``switchboard stats``; an adapter that stopped for good
  after start-up (credentials revoked, say) says why with ``Health.stop_for_good``, which
  ``switchboard check`` fails on, and calls ``ChannelContext.stop_all`` when the process should stop.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.channel import OutboxConsumer, Service


class Adapter(Service, Protocol):
    """A ``Service`` of one channel (``channel`` is the channel its messages carry)."""

    channel: str


@dataclass
class Health:
    """The health state of one adapter (or of one bot or mailbox inside it)."""

    connected: bool = False
    #: One line for people: what it is connected to, or what it is doing.
    detail: str = ""
    last_error: str = ""
    last_error_at: float | None = None
    #: Why the adapter stopped for good, once it did (``switchboard check`` fails on it).
    fatal: str = ""
    fatal_at: float | None = None
    counters: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], float] = time.time

    @classmethod
    def counting(cls, names: Iterable[str], **fields: Any) -> Health:
        """A state whose counters ``names`` show in the record from the start, at 0."""
        return cls(counters=Counter(dict.fromkeys(names, 0)), **fields)

    def error(self, text: str, *, disconnected: bool = True) -> None:
        """Record an error; one that says nothing about the connection (a refused reply, a full
        inbox) keeps ``connected`` as it is."""
        self.last_error = text
        self.last_error_at = self.clock()
        if disconnected:
            self.connected = False

    def stop_for_good(self, reason: str) -> None:
        self.fatal = reason
        self.fatal_at = self.clock()
        self.error(reason)

    def count_outbox(self, outbox: OutboxConsumer) -> Health:
        """Take the replies ``outbox`` sent and failed into the counters (``sent``, ``failed``)."""
        self.counters["sent"] = outbox.sent
        self.counters["failed"] = outbox.failed
        return self

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record: ``connected``, ``detail`` (``STOPPED: …`` once fatal), the last
        error, ``fatal`` and ``fatal_at`` (empty until the adapter stopped for good), the counters."""
        return {
            "connected": self.connected,
            "detail": f"STOPPED: {self.fatal}" if self.fatal else self.detail,
            "fatal": self.fatal,
            "fatal_at": self.fatal_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            **self.counters,
        }
