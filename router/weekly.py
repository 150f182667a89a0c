"""The weekly summary, sent once a week across every replica (issue 20, item 5).

Every ``switchboard run`` process with ``[reports] weekly = true`` runs ``WeeklyReports``. Every
``tick_s`` it works out the week due (``due_week``: the last ISO week whose send time, the
configured weekday and hour in the configured time zone after it, has passed) and, for each
recipient (``email``, ``telegram``) not marked for that week, computes the summary and sends it:

- **one sender per week and recipient**: the key ``report:weekly:{week}:{to}`` (router/keys.py) is
  taken with ``SET NX PX claim_s`` ("sending ...") before the send, so of two replicas racing one
  sends and the other finds the key;
- **marked only once sent**: after the recipient accepted it, the claim becomes "sent ..." (kept 8
  weeks) — only while it is still this process's claim (WATCH/MULTI);
- **a failed send is retried**: the claim is deleted (again only if it is still ours), nothing is
  marked, and the next tick tries again. A process that dies mid-send leaves its claim to expire
  after ``claim_s``, and another replica sends: a crash after the recipient accepted and before the
  mark sends that week twice (at least once across crashes, exactly once across races); by e-mail
  with the same Message-ID both times (adapters/email/report.py), which mail clients may drop.

The summary needs the analytics store (DuckDB, one writing process per file). Inside the process
that runs the exporter it is read through a cursor of the exporter's own connection; elsewhere the
file is opened read-only, which fails while another process's exporter holds it: then this replica
claims nothing and waits, and the replica whose exporter holds the file sends.

A week is never back-filled: only the latest due week is sent (a deployment down for three weeks
sends the last one when it is back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import duckdb
import redis.asyncio as aioredis

from router.complaints import DAY_MS, complaint_causes_between
from router.config import ReportSettings
from router.errors import SwitchboardError
from router.exporter import Exporter
from router.keys import Keys
from router.leases import Clock, WallClock
from router.lifecycle import Loop
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.summary import Figures, Summary, Week, WeekCauses, gather, render

log = logging.getLogger("switchboard.weekly")

#: How long a "sent" mark is kept: longer than any week a replica could still find due.
SENT_TTL_S = 8 * 7 * 86400


class Recipient(Protocol):
    """Where the summary goes (built by the CLI from the adapters: adapters/email/report.py,
    adapters/telegram/report.py). ``name`` is the key's last part; ``send`` raises on failure."""

    name: str

    def describe(self) -> str: ...

    async def send(self, subject: str, text: str, html: str) -> str:
        """Send it; returns what the far side answered (for the log)."""
        ...


class Connector(Protocol):
    """A DuckDB connection to read the store through, for the length of a ``with``; None when
    the store cannot be read now (another process's exporter holds it)."""

    def __call__(self) -> AbstractContextManager[duckdb.DuckDBPyConnection | None]: ...


def send_time(week: Week, settings: ReportSettings) -> datetime:
    """When ``week``'s summary is due: the configured weekday and hour of the week after it."""
    after = week.shift(1)
    return after.start + timedelta(days=settings.weekday_number - 1, hours=settings.hour)


def due_week(now: datetime, settings: ReportSettings) -> Week:
    """The latest week whose summary is due at ``now`` (aware)."""
    last = Week.of(now, settings.timezone).shift(-1)
    return last if send_time(last, settings) <= now else last.shift(-1)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def week_causes(rt: Runtime, week: Week, now: datetime, top: int) -> WeekCauses:
    """``week``'s complaint causes (router/complaints.py, from Redis: the store keeps no texts),
    or why Redis cannot tell them. A closed conversation is deleted
    ``retention.closed_conversation_days`` after it closed (0: never), so every conversation
    created since ``now`` minus that is still there and one created before may be gone: a period
    that began earlier is said missing, never counted short."""
    if week.start > now:
        return WeekCauses(None, "the week has not begun", top=top)
    start, end = _ms(week.start), _ms(week.end)
    before_start = start - (end - start)  # complaint_causes_between's period before
    keep = rt.settings.retention.closed_conversation_days
    kept_from = _ms(now) - round(keep * DAY_MS) if keep else None
    why = f"Redis keeps a closed conversation {keep:g} days (retention.closed_conversation_days)"
    if kept_from is not None and start < kept_from:
        return WeekCauses(
            None, f"{why} and the week began before that: its complaints may no longer all be there", top=top
        )
    before = (
        f"{why} and the week before began before that" if kept_from is not None and before_start < kept_from else ""
    )
    return WeekCauses(await complaint_causes_between(rt, start, end), before_missing=before, top=top)


class StoreUnreadable(SwitchboardError):
    """The analytics store cannot be read from this process now; the message says why."""


class Opener(Protocol):
    """A DuckDB connection to read the store through, for the length of a ``with``; raises
    ``StoreUnreadable`` when it cannot be read now."""

    def __call__(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


def store_opener(path: Path, exporter: Exporter | None = None) -> Opener:
    """Read the store through ``exporter``, this process's, while it holds the file (a cursor of
    its connection: DuckDB allows one writing process); without one, read-only when no process
    holds the file. Beside an exporter of its own it never opens the file itself: a read-only
    opening would keep that exporter out of it (DuckDB: one configuration per file in a process)."""

    @contextmanager
    def connect() -> Iterator[duckdb.DuckDBPyConnection]:
        if exporter is not None:
            cursor = exporter.reader()
            if cursor is None:
                raise StoreUnreadable(
                    f"this process's exporter does not hold {path} now (starting, or standing by while"
                    " another process's exporter writes it)"
                )
        elif not path.exists():
            raise StoreUnreadable(f"there is no analytics store at {path} yet (the exporter has written nothing)")
        else:
            try:
                cursor = duckdb.connect(str(path), read_only=True)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                raise StoreUnreadable(
                    f"{path} is held by another process's exporter (DuckDB lets no other process open"
                    f" a file one writes): {exc}"
                ) from exc
        try:
            yield cursor
        finally:
            cursor.close()

    return connect


def store_reader(path: Path, exporter: Exporter | None = None) -> Connector:
    """``store_opener``'s connection, or None (logged) when the store cannot be read now."""
    opener = store_opener(path, exporter)

    @contextmanager
    def connect() -> Iterator[duckdb.DuckDBPyConnection | None]:
        with ExitStack() as stack:
            try:
                con: duckdb.DuckDBPyConnection | None = stack.enter_context(opener())
            except StoreUnreadable as exc:
                log.info("weekly summary: the analytics store cannot be read here now: %s", exc)
                con = None
            yield con

    return connect


class WeeklyReports:
    """A ``Service``: every ``tick_s``, sends the due week's summary to each recipient not marked
    sent for it. ``clock`` decides what is due (a fake one in tests, which call ``tick``)."""

    name = "weekly-report"

    def __init__(
        self,
        rt: Runtime,
        recipients: list[Recipient],
        connector: Connector,
        *,
        settings: ReportSettings | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings or rt.settings.reports
        self.recipients = recipients
        self.clock = clock or WallClock()
        self.owner = owner or rt.instance
        self._rt = rt
        self._client: aioredis.Redis = rt.client
        self._keys: Keys = rt.keys
        self._connector = connector
        self._loop = Loop("weekly summary", TRANSIENT_ERRORS, graceful=True)
        self.sent: dict[str, str] = {}  # recipient -> the last week this process sent it
        self.failed_sends = ""  # the last tick's
        self.standby = ""  # why the last tick could not compute the summary here
        # The due week's summary once computed (a dozen queries and the complaint causes, which
        # embed texts: tens of seconds), so that a retry does not compute it again.
        self._made: Summary | None = None

    async def start(self) -> None:
        async def tick() -> None:  # a round's "more" is not what tick returns (what it sent)
            await self.tick()

        self._loop.rounds(tick, lambda: self.settings.tick_s)

    async def close(self) -> None:
        await self._loop.close()

    def health(self) -> dict[str, Any]:
        to = ", ".join(r.describe() for r in self.recipients)
        sent = ", ".join(f"{k} {v}" for k, v in self.sent.items()) or "nothing yet"
        last_error = self._loop.last_error or self.failed_sends
        return {
            "connected": not last_error,
            "detail": last_error or self.standby or f"weekly summary to {to}; sent by this process: {sent}",
            "sent": self.sent,
        }

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, UTC)

    async def tick(self) -> dict[str, str]:
        """Send the due week's summary where it is not sent yet: recipient -> what happened
        (``sent``, ``taken`` by another replica, ``failed: ...``, ``no store``)."""
        return await self.deliver(due_week(self.now(), self.settings))

    async def deliver(self, week: Week) -> dict[str, str]:
        """``week``'s summary to each recipient not marked for it (also ``report weekly --send``)."""
        pending = [r for r in self.recipients if not await self._client.exists(self._key(week, r))]
        self.standby = ""
        if not pending:
            self.failed_sends = ""
            return {}
        if self._made is not None and self._made.week == week.label:
            summary: Summary | None = self._made  # a retry sends what the first try computed
        else:
            summary = self._made = await self.summary(week)
        if summary is None:
            # Not an error: the replica whose exporter holds the file sends.
            self.standby = f"{week.label} due; the analytics store cannot be read here (another process holds it)"
            return {r.name: "no store" for r in pending}
        out = {r.name: await self._send(week, r, summary) for r in pending}
        failed = [f"{name}: {what}" for name, what in out.items() if what.startswith("failed")]
        self.failed_sends = "; ".join(failed)
        return out

    async def summary(self, week: Week) -> Summary | None:
        """``week``'s summary, business hours from the SLA policy in force, with the week's
        complaint causes; None without a store."""
        calendar = await self._rt.sla_policies.calendars()

        def compute() -> Figures | None:
            with self._connector() as con:
                if con is None:
                    return None
                return gather(con, week, calendar, top_transfers=self.settings.top_transfers)

        figures = await asyncio.to_thread(compute)
        if figures is None:
            return None  # not read from Redis either: the replica that holds the store sends
        # Embedding the week's complaints takes seconds per thousand; complaint_causes_between
        # does it in a thread, and deliver() keeps the result for the retries.
        return render(figures, await week_causes(self._rt, week, self.now(), self.settings.top_causes))

    def _key(self, week: Week, r: Recipient) -> str:
        return self._keys.weekly_report(week.label, r.name)

    async def _send(self, week: Week, r: Recipient, summary: Summary) -> str:
        key = self._key(week, r)
        claim = f"sending {self.owner} {self.clock.now_ms()}"
        if not await self._client.set(key, claim, nx=True, px=round(self.settings.claim_s * 1000)):
            return "taken"
        try:
            answer = await r.send(summary.subject, summary.text, summary.html)
        except Exception as exc:
            # Not marked: the claim goes, and the next tick (here or in another replica) tries again.
            await self._swap(key, claim, None)
            log.error(
                "weekly summary %s to %s failed (retried in %.0f s): %s",
                week.label,
                r.describe(),
                self.settings.tick_s,
                exc,
            )
            return f"failed: {exc}"
        mark = f"sent {self.owner} {self.clock.now_ms()} {answer}"[:500]
        if not await self._swap(key, claim, mark):
            log.warning("weekly summary %s to %s: sent, but the claim had expired meanwhile", week.label, r.describe())
        self.sent[r.name] = week.label
        log.info("weekly summary %s sent to %s: %s", week.label, r.describe(), answer)
        return "sent"

    async def _swap(self, key: str, claim: str, value: str | None) -> bool:
        """Replace (``value``) or delete (None) ``key`` if it still holds ``claim``."""
        async with self._client.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            current = await pipe.get(key)
            if current is None or current.decode() != claim:
                return False
            pipe.multi()
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value, ex=SENT_TTL_S)
            await pipe.execute()
        return True
