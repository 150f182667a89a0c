"""Inbound e-mail: one IMAP reader per mailbox, IDLE with a polling fallback, a durable UID cursor.

The loop, per connection:

1. connect (implicit TLS, STARTTLS or plain), LOGIN, SELECT the folder;
2. catch up: every UID above the cursor is fetched (``BODY.PEEK[]``, so the mailbox's read state
   is untouched), parsed, appended to the inbox, and only then is the cursor advanced;
3. wait for news: IDLE until the server pushes something, or ``idle_renew_s`` passes (IDLE is
   then re-issued: a keep-alive and a safety poll); without IDLE, poll every ``poll_interval_s``;
4. back to 2. Any error drops the connection; the loop reconnects with exponential backoff and
   the catch-up of step 2 picks up whatever arrived meanwhile. Because the cursor moves only after
   the append and the append is idempotent on the Message-ID, nothing is lost or doubled.

The cursor is ``cursor:email:{account}`` field ``uid:{folder}`` = ``"{uidvalidity}:{uid}:{unix time}"``.
When the server's UIDVALIDITY changes (the folder was rebuilt, UIDs renumbered), the messages
since one day before the cursor's time are fetched again; the inbox's Message-ID deduplication
drops the ones already taken in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aioimaplib

from adapters.base import Health
from adapters.email.config import MailboxConfig
from adapters.email.mime import ParsedMail, parse
from adapters.email.own import own_copy_reason
from adapters.email.threads import ThreadIndex
from router.channel import (
    TRANSIENT_ERRORS,
    AppendRefused,
    Attachment,
    Backoff,
    ChannelContext,
    ConfigError,
    Envelope,
    Sender,
    keep_running,
    new_id,
    now,
)

log = logging.getLogger("switchboard.email")

CHANNEL = "email"
T = TypeVar("T")


class ImapError(Exception):
    """The server refused a command or the connection broke; the reader reconnects."""


class AuthFailed(ImapError):
    """LOGIN was refused: wrong user or password (or an app password is needed)."""


#: Errors after which the reader drops the connection and reconnects with backoff.
RECOVERABLE: tuple[type[BaseException], ...] = (
    ImapError,
    aioimaplib.AioImapException,
    TimeoutError,
    OSError,
    ssl.SSLError,
    *TRANSIENT_ERRORS,
    AppendRefused,  # the inbox is full or Redis out of memory: the cursor stays, taken again later
)


def tls_context(cfg: MailboxConfig) -> ssl.SSLContext:
    """The TLS settings of a mailbox: system CAs (or ``tls_ca_file``), verification unless turned off."""
    ctx = ssl.create_default_context(cafile=str(cfg.tls_ca_file) if cfg.tls_ca_file else None)
    if not cfg.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(slots=True)
class Fetched:
    uid: int
    raw: bytes
    size: int | None
    internal_date: float | None


_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')


def parse_fetch(lines: Sequence[bytes | bytearray]) -> list[Fetched]:
    """The messages in an aioimaplib UID FETCH response (UID may come before or after the literal)."""
    out: list[Fetched] = []
    meta = b""
    literal: bytes | None = None

    def flush() -> None:
        uid = _UID.search(meta)
        if uid and literal is not None:
            size = _SIZE.search(meta)
            out.append(Fetched(int(uid.group(1)), literal, int(size.group(1)) if size else None, _idate(meta)))

    for line in lines[:-1]:  # the last line is the tagged completion text
        if isinstance(line, bytearray):
            literal = bytes(line)
        elif _FETCH_START.match(line):
            flush()
            meta, literal = line, None
        else:
            meta += b" " + line
    flush()
    return out


def _idate(meta: bytes) -> float | None:
    found = _INTERNALDATE.search(meta)
    if not found:
        return None
    try:
        return datetime.strptime(found.group(1).decode().strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
    except ValueError:
        return None


def parse_search(lines: Sequence[bytes | bytearray]) -> list[int]:
    uids: list[int] = []
    for line in lines[:-1]:
        uids.extend(int(tok) for tok in bytes(line).split() if tok.isdigit())
    return sorted(set(uids))


def build_envelope(
    mail: ParsedMail,
    *,
    cfg: MailboxConfig,
    uidvalidity: int,
    uid: int,
    conversation_key: str,
    received_at: float | None,
    truncated: bool,
) -> Envelope:
    """The router's envelope for one parsed message (conventions: docs/email.md)."""
    fallback = f"{uidvalidity}:{uid}"
    attributes = {"domain": mail.from_addr.rpartition("@")[2].lower()} if "@" in mail.from_addr else {}
    meta = {
        "message_id": mail.message_id,
        # What a reply's References must start with: the message's own References, or its parent.
        "references": " ".join(mail.references or mail.in_reply_to),
        "from": mail.from_addr,
        # Display names, for the To of replies ("Alice Customer <alice@…>", not the bare address).
        "from_name": mail.from_name,
        "to": mail.to,
        "subject": mail.subject,
        "folder": cfg.folder,
        "uid": fallback,
    }
    if mail.reply_to and mail.reply_to.lower() != mail.from_addr.lower():
        meta["reply_to"] = mail.reply_to
        meta["reply_to_name"] = mail.reply_to_name
    if mail.cc:
        meta["cc"] = mail.cc
    if mail.auto_reason:
        meta["auto_submitted"] = "1"
        meta["auto_reason"] = mail.auto_reason
        attributes["auto_submitted"] = "yes"
    if mail.html_only:
        meta["html_only"] = "1"
    if truncated:
        meta["truncated"] = "1"
    if mail.body != mail.text:
        # The router keeps only the routed (redacted) text; the whole body rides along when short.
        if len(mail.body) <= cfg.full_body_max_chars:
            meta["full_body"] = mail.body
        else:
            meta["full_body_omitted"] = str(len(mail.body))
    text = mail.text
    if len(text) > cfg.max_text_chars:
        meta["text_truncated"] = str(len(text))
        text = text[: cfg.max_text_chars]
    attachments = tuple(
        Attachment(
            name=part.name,
            type=part.type,
            # Sizes of a message cut at max_fetch_bytes are unknown for the parts it cut.
            size=None if truncated else part.size,
            ref=f"imap:{cfg.name}:{uidvalidity}:{uid}:{part.section}",
        )
        for part in mail.attachments[: cfg.max_attachments]
    )
    if len(mail.attachments) > cfg.max_attachments:
        meta["attachments_omitted"] = str(len(mail.attachments) - cfg.max_attachments)
    stamp = now()
    return Envelope(
        id=new_id(),
        channel=CHANNEL,
        account=cfg.name,
        platform_id=mail.message_id or fallback,
        conversation_key=conversation_key,
        sender=Sender(
            id=mail.from_addr.lower() or "unknown",
            name=mail.from_name,
            handle=mail.from_addr,
            language=mail.language,
            attributes=attributes,
        ),
        text=text,
        subject=mail.subject or None,
        attachments=attachments,
        received_at=min(received_at, stamp) if received_at else stamp,
        reply_to=mail.in_reply_to[0] if mail.in_reply_to else None,
        meta=meta,
    )


def _unparseable(cfg: MailboxConfig, uidvalidity: int, uid: int, exc: Exception) -> Envelope:
    # A message the parser chokes on is still a customer writing in: route a stub, never drop it.
    pid = f"{uidvalidity}:{uid}"
    return Envelope(
        id=new_id(),
        channel=CHANNEL,
        account=cfg.name,
        platform_id=pid,
        conversation_key=pid,
        sender=Sender(id="unknown"),
        text=f"(this e-mail could not be read: {type(exc).__name__}; see the mailbox, folder {cfg.folder})",
        received_at=now(),
        meta={"uid": pid, "folder": cfg.folder, "parse_error": str(exc)[:500]},
    )


class _Connection:
    """One IMAP connection and the event its loss sets (aioimaplib leaves pending commands hanging)."""

    def __init__(self, cfg: MailboxConfig) -> None:
        self.cfg = cfg
        self.lost = asyncio.Event()
        ssl_ctx = tls_context(cfg) if cfg.imap_tls == "implicit" else None
        self.imap = aioimaplib.IMAP4(
            host=cfg.imap_host,
            port=cfg.imap_port_,
            timeout=cfg.timeout_s,
            conn_lost_cb=lambda _exc: self.lost.set(),
            ssl_context=ssl_ctx,
        )
        self.uidvalidity = 0
        self.uidnext = 0

    async def call(self, coro: Awaitable[T], *, limit: float | None = -1.0) -> T:
        """Await an aioimaplib call, failing at once if the connection drops meanwhile.

        ``limit`` bounds the whole call (default: twice ``timeout_s``); None leaves it to
        aioimaplib's own inactivity timer (a large FETCH may take long but keeps data coming).
        """
        task = asyncio.ensure_future(coro)
        lost = asyncio.ensure_future(self.lost.wait())
        timeout = self.cfg.timeout_s * 2 if limit is not None and limit < 0 else limit
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            lost.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise ImapError("connection lost" if self.lost.is_set() else "command timed out")

    async def ok(self, coro: Awaitable[Any], what: str) -> Any:
        response = await self.call(coro)
        if response.result != "OK":
            raise ImapError(f"{what}: {response.result} {_text(response.lines)}")
        return response

    async def open(self, password: str) -> None:
        cfg = self.cfg
        await self.call(self.imap.wait_hello_from_server())
        if cfg.imap_tls == "starttls":
            await self._starttls()
        response = await self.call(self.imap.login(cfg.login, password))
        if response.result != "OK":
            raise AuthFailed(
                f"IMAP login as {cfg.login!r} on {cfg.imap_host} refused: {_text(response.lines)}"
                " (hosted services usually need an app password: see docs/email.md)"
            )
        selected = await self.ok(self.imap.select(_quote(cfg.folder)), f"SELECT {cfg.folder}")
        blob = b"\n".join(bytes(line) for line in selected.lines)
        validity = _UIDVALIDITY.search(blob)
        nxt = _UIDNEXT.search(blob)
        if not validity:
            raise ImapError(f"SELECT {cfg.folder}: the server sent no UIDVALIDITY")
        self.uidvalidity = int(validity.group(1))
        self.uidnext = int(nxt.group(1)) if nxt else 0

    async def _starttls(self) -> None:
        # aioimaplib has no STARTTLS: issue the command, then upgrade the transport in place.
        protocol = self.imap.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(f"{self.cfg.imap_host} does not offer STARTTLS; use imap_tls = 'implicit'")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop, timeout=self.cfg.timeout_s)
        response = await self.call(protocol.execute(command))
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {_text(response.lines)}")
        loop = asyncio.get_running_loop()
        transport = await asyncio.wait_for(
            loop.start_tls(
                protocol.transport,
                protocol,
                tls_context(self.cfg),
                server_hostname=self.cfg.imap_host,
            ),
            self.cfg.timeout_s,
        )
        protocol.transport = transport
        # RFC 3501 6.2.1: capabilities from before TLS must be discarded.
        await self.call(protocol.capability())

    @property
    def can_idle(self) -> bool:
        return bool(self.imap.has_capability("IDLE"))

    async def search_uids(self, first: int) -> list[int]:
        response = await self.ok(self.imap.uid_search(f"UID {first}:*", charset=None), "UID SEARCH")
        # "n:*" always includes the highest UID, even below n.
        return [uid for uid in parse_search(response.lines) if uid >= first]

    async def search_since(self, day: datetime) -> list[int]:
        response = await self.ok(
            self.imap.uid_search("SINCE", day.strftime("%d-%b-%Y"), charset=None), "UID SEARCH SINCE"
        )
        return parse_search(response.lines)

    async def fetch(self, uids: Sequence[int], max_bytes: int) -> list[Fetched]:
        uid_set = ",".join(str(u) for u in uids)
        response = await self.call(
            self.imap.uid("fetch", uid_set, f"(UID INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{max_bytes}>)"),
            limit=None,
        )
        if response.result != "OK":
            raise ImapError(f"UID FETCH: {response.result} {_text(response.lines[-1:])}")
        return parse_fetch(response.lines)

    async def noop(self) -> None:
        await self.ok(self.imap.noop(), "NOOP")

    def drop(self) -> None:
        transport = getattr(self.imap.protocol, "transport", None)
        if transport is not None:
            transport.close()
        self.imap._client_task.cancel()
        self.lost.set()

    async def logout(self) -> None:
        with contextlib.suppress(*RECOVERABLE):
            await asyncio.wait_for(self.imap.logout(), min(self.cfg.timeout_s, 5.0))
        self.drop()


def _quote(folder: str) -> str:
    # Folder names with spaces or specials must be quoted; INBOX and simple names need not be.
    if re.fullmatch(r"[A-Za-z0-9_./-]+", folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(lines: Sequence[bytes | bytearray]) -> str:
    return " ".join(bytes(line).decode("utf-8", "replace") for line in lines)[:300]


class MailboxReader:
    """The inbound half of one mailbox: an Adapter of its own (``email:{name}``)."""

    channel = CHANNEL

    def __init__(self, ctx: ChannelContext, cfg: MailboxConfig, password: str) -> None:
        self.name = f"email:{cfg.name}"
        self.cfg = cfg
        self._ctx = ctx
        self._password = password
        self._threads = ThreadIndex(ctx, cfg.name, cfg.thread_ttl_days * 86400)
        self._conn: _Connection | None = None
        self._stopping = asyncio.Event()
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._task: asyncio.Task[None] | None = None
        # One reader per mailbox across replicas: this one reads only while it holds the lease.
        self.exclusive = ctx.exclusive(CHANNEL, cfg.name)
        self._cursor_name = f"uid:{cfg.folder}"
        self.mode = "starting"
        #: ``own_copies``: our own replies seen in the folder and left out of the inbox (own.py).
        self.state = Health.counting(("received", "duplicates", "own_copies", "reconnects"))
        self.last_uid = 0
        #: Set while the reader waits for news (in IDLE, acknowledged by the server, or between
        #: polls) with everything before taken in; cleared while it catches up. Mail delivered
        #: once it is set is announced to this wait: a server that announces only changes made
        #: during IDLE (pymap) would otherwise hold mail delivered just before it until the renewal.
        self.caught_up = asyncio.Event()

    # -- Adapter -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect once (bad credentials raise ConfigError), then run the loop in the background."""
        try:
            await self._connect()
        except AuthFailed as exc:
            raise ConfigError(str(exc)) from None
        except RECOVERABLE as exc:
            # The mail server being down must not keep the router from starting: the loop retries.
            self._fail(exc)
            log.warning("%s: cannot connect yet (%s); retrying in the background", self.name, exc)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.cfg.timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._conn is not None:
            await self._conn.logout()
            self._conn = None

    def health(self) -> dict[str, Any]:
        self.state.connected = self._conn is not None and not self._conn.lost.is_set()
        error = self.state.last_error
        lease = self.exclusive.state()
        mode = self.mode if lease["lease"] == "held" else f"standby ({lease['holder'] or 'lease free'} reads)"
        self.state.detail = f"{mode} on {self.cfg.folder}" + (f"; last error: {error}" if error else "")
        return {**self.state.as_dict(), "mode": mode, "last_uid": self.last_uid, **lease}

    # -- the loop ------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        self.state.error(f"{type(exc).__name__}: {exc}")
        if self._conn is not None:
            self._conn.drop()
            self._conn = None

    async def _connect(self) -> _Connection:
        self.mode = "connecting"
        conn = _Connection(self.cfg)
        try:
            await conn.open(self._password)
        except BaseException:
            conn.drop()
            raise
        self._conn = conn
        self.state.last_error = ""
        log.info("%s: connected to %s, folder %s", self.name, self.cfg.imap_host, self.cfg.folder)
        return conn

    async def _run(self) -> None:
        await self.exclusive.run(self._read, self._stopping)

    async def _read(self) -> None:
        """The reading loop, run while this replica holds the mailbox's lease (cancelled once lost)."""
        try:
            await keep_running(
                self._serve,
                self._stopping,
                what=self.name,
                retry_on=RECOVERABLE,
                backoff=self._backoff,
                on_error=self._reconnect_after,
                describe=lambda exc: self.state.last_error,
            )
        finally:
            # Lost the lease (cancelled in the middle of a command, IDLE or a fetch, or past its
            # deadline): the connection's state is unknown, and a standby needs none; the next
            # holding connects again. At a stop, close() logs out instead.
            if not self._stopping.is_set() and self._conn is not None:
                self._conn.drop()
                self._conn = None

    async def _serve(self) -> bool:
        """Connect if need be, take in what is new, wait for news (IDLE or a poll). True (the loop
        ends, and stands by) when the lease's deadline passed: another replica may read now."""
        if not self.exclusive.held:
            return True
        conn = self._conn or await self._connect()
        await self._catch_up(conn)
        self._backoff.reset()  # the connection works: a later failure waits the shortest time again
        await self._wait_for_news(conn)
        return False

    async def _reconnect_after(self, exc: BaseException) -> float | None:
        """Drop the connection; the wait before reconnecting (None: the backoff's next one)."""
        self._fail(exc)
        self.mode = "reconnecting"
        self.state.counters["reconnects"] += 1
        if isinstance(exc, AuthFailed):
            log.error("%s: %s", self.name, exc)
            # A password change is not fixed by hammering the server (and may lock the account).
            return self.cfg.reconnect_max_s
        return None

    async def _cursor(self, conn: _Connection) -> int:
        """The last UID taken in; sets the cursor on the first start and on a UIDVALIDITY change."""
        raw = await self._ctx.cursor_get(CHANNEL, self.cfg.name, self._cursor_name)
        if raw:
            validity, _, rest = raw.partition(":")
            stored, _, stamp = rest.partition(":")
            if int(validity) == conn.uidvalidity:
                return int(stored)
            log.warning(
                "%s: UIDVALIDITY of %s changed (%s -> %s): re-reading since the last cursor's day",
                self.name,
                self.cfg.folder,
                validity,
                conn.uidvalidity,
            )
            since = datetime.fromtimestamp(float(stamp or time.time()), UTC) - timedelta(days=1)
            uids = await conn.search_since(since)
            last = (min(uids) - 1) if uids else max(conn.uidnext - 1, 0)
        elif self.cfg.backfill_all:
            last = 0
        elif self.cfg.backfill_days:
            uids = await conn.search_since(datetime.now(UTC) - timedelta(days=self.cfg.backfill_days))
            last = (min(uids) - 1) if uids else max(conn.uidnext - 1, 0)
        else:
            last = max(conn.uidnext - 1, 0)
            if not conn.uidnext:
                # No UIDNEXT in SELECT: the highest UID now is where "new" starts.
                existing = await conn.search_uids(1)
                last = existing[-1] if existing else 0
        await self._set_cursor(conn.uidvalidity, last)
        return last

    async def _set_cursor(self, uidvalidity: int, uid: int) -> None:
        await self._ctx.cursor_set(CHANNEL, self.cfg.name, self._cursor_name, f"{uidvalidity}:{uid}:{int(time.time())}")
        self.last_uid = uid

    async def _catch_up(self, conn: _Connection) -> None:
        self.mode = "catching up"
        self.caught_up.clear()
        last = await self._cursor(conn)
        self.last_uid = last
        first = last + 1
        # Until a search finds nothing new: mail that arrives while a batch is fetched is announced
        # (EXISTS) in the responses to those commands, not to the IDLE that follows, which would
        # then wait up to idle_renew_s for it.
        while uids := await conn.search_uids(first):
            last = await self._take(conn, uids, last)
            first = max(last, uids[-1]) + 1

    async def _take(self, conn: _Connection, uids: list[int], last: int) -> int:
        """Fetch and append ``uids`` in batches, moving the cursor after each; the new last UID."""
        for start in range(0, len(uids), self.cfg.fetch_batch):
            chunk = uids[start : start + self.cfg.fetch_batch]
            fetched = sorted(await conn.fetch(chunk, self.cfg.max_fetch_bytes), key=lambda f: f.uid)
            fetched = [f for f in fetched if f.uid > last]
            if not fetched:
                continue
            taken = [await self._envelope(conn.uidvalidity, f) for f in fetched]
            envelopes = [env for env in taken if env is not None]
            self.state.counters["own_copies"] += len(taken) - len(envelopes)
            results = await self._ctx.append_many(envelopes) if envelopes else []
            # The cursor moves only now that the messages are durable in the inbox.
            last = fetched[-1].uid
            await self._set_cursor(conn.uidvalidity, last)
            dupes = sum(r.duplicate for r in results)
            self.state.counters["duplicates"] += dupes
            self.state.counters["received"] += len(results) - dupes
            log.info("%s: took in %d message(s) up to UID %d", self.name, len(results) - dupes, last)
        return last

    async def _envelope(self, uidvalidity: int, fetched: Fetched) -> Envelope | None:
        """The envelope of one fetched message; None for a copy of our own mail (dropped)."""
        try:
            mail = parse(fetched.raw)
        except Exception as exc:  # the stdlib parser is lenient; anything it raises is a bug worth a stub
            log.exception("%s: UID %d could not be parsed", self.name, fetched.uid)
            return _unparseable(self.cfg, uidvalidity, fetched.uid, exc)
        own = own_copy_reason(mail, self.cfg)
        if own is not None:
            # Our reply is in the conversation already (outbound, with its delivery record).
            log.info("%s: UID %d is our own mail (%s): not taken in", self.name, fetched.uid, own)
            return None
        key, _ = await self._threads.resolve(
            own_id=mail.message_id,
            fallback_id=f"{uidvalidity}:{fetched.uid}",
            in_reply_to=mail.in_reply_to,
            references=mail.references,
            subject=mail.subject,
            split_on_new_subject=self.cfg.split_on_new_subject,
        )
        truncated = fetched.size is not None and fetched.size > len(fetched.raw)
        return build_envelope(
            mail,
            cfg=self.cfg,
            uidvalidity=uidvalidity,
            uid=fetched.uid,
            conversation_key=key,
            received_at=fetched.internal_date,
            truncated=truncated,
        )

    async def _wait_for_news(self, conn: _Connection) -> None:
        if self._stopping.is_set():
            return
        if self.cfg.idle and conn.can_idle:
            try:
                await self._idle(conn)
                return
            except aioimaplib.Abort as exc:
                # The server advertised IDLE and then refused it: poll on this connection.
                log.warning("%s: IDLE refused (%s); polling every %.0fs", self.name, exc, self.cfg.poll_interval_s)
                self.state.error(f"IDLE refused: {exc}", disconnected=False)
        self.mode = "polling"
        self.caught_up.set()
        stop = asyncio.ensure_future(self._stopping.wait())
        lost = asyncio.ensure_future(conn.lost.wait())
        try:
            await asyncio.wait({stop, lost}, timeout=self.cfg.poll_interval_s, return_when="FIRST_COMPLETED")
        finally:
            stop.cancel()
            lost.cancel()
        if conn.lost.is_set():
            raise ImapError("connection lost while polling")
        if not self._stopping.is_set():
            await conn.noop()

    async def _idle(self, conn: _Connection) -> None:
        imap = conn.imap
        idle_task = await conn.call(imap.idle_start(timeout=self.cfg.idle_renew_s))
        self.mode = "idle"
        self.caught_up.set()
        push = asyncio.ensure_future(imap.wait_server_push(timeout=self.cfg.idle_renew_s + self.cfg.timeout_s))
        stop = asyncio.ensure_future(self._stopping.wait())
        lost = asyncio.ensure_future(conn.lost.wait())
        try:
            await asyncio.wait({push, stop, lost}, return_when="FIRST_COMPLETED")
        finally:
            stop.cancel()
            lost.cancel()
            if not push.done():
                push.cancel()
        if conn.lost.is_set():
            raise ImapError("connection lost during IDLE")
        if push.done() and not push.cancelled() and push.exception() is None:
            lines = push.result()
            if isinstance(lines, list) and any(b"BYE" in bytes(line) for line in lines):
                raise ImapError("server closed the connection (BYE) during IDLE")
        # New mail, the renewal timer or a stop: end IDLE (DONE) and wait for its tagged OK.
        imap.idle_done()
        try:
            await conn.call(asyncio.wait_for(idle_task, self.cfg.timeout_s))
        except TimeoutError:
            raise ImapError("no answer to IDLE DONE") from None
