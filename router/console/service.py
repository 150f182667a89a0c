"""What the console does, with access checked: shared by the HTML views and the JSON API.

It reaches Redis only through ``router.backoffice.Backoffice`` (stores and readers outside the
console package), and the sandbox only through the ``SandboxPort`` it is given.

Every method that touches a conversation, a queue or a group takes the acting ``User`` and checks
it here, server-side, before any read or write: an agent outside a conversation's group gets
NotFound (its existence is not disclosed), an agent asking for another group's queue or stream gets
Forbidden, and everything about rules and users needs an admin.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib.resources
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router import drafts
from router.accounts import FIRST_ADMIN, LoginLimiter, Sessions, User, Users
from router.admission import Block, parse_duration
from router.audit import Audit
from router.backoffice import Backoffice
from router.config import Settings, read_secret
from router.conversations import Conversation, HistoryEntry, parse_priority
from router.errors import BadRequest, NotFound
from router.links import Link
from router.model import decode_envelope
from router.presence import Presence
from router.published import Published
from router.routing import message_in
from router.runtime import Runtime
from router.simulator import SandboxPort
from router.slaview import countdowns, nearest_ms
from router.stats import StatsReader, queue_dict
from router.weekly import Opener, store_opener
from rules import Decision, Engine, MessageIn, RuleError, RuleSetError
from sla import ClockError, PolicyError

from .access import require_admin, require_group
from .knowledge import KBConsole
from .reporting import ConsoleReports


@dataclass(frozen=True, slots=True)
class Validation:
    """The outcome of validating a draft rule set: the engine when it compiles, and every finding."""

    engine: Engine | None
    errors: list[RuleError]

    @property
    def ok(self) -> bool:
        return self.engine is not None


@dataclass(frozen=True, slots=True)
class ReplayRow:
    entry: str
    channel: str
    sender: str
    text: str
    before: dict[str, Any]
    after: dict[str, Any]
    changed: tuple[str, ...]


FIRST_ADMIN_FILE = "first-admin-password"


class Console:
    """The console's services over one Runtime (built by ``create_app``; started by its lifespan)."""

    def __init__(
        self, rt: Runtime, settings: Settings, sandbox: SandboxPort | None = None, store: Opener | None = None
    ) -> None:
        self.office = Backoffice(rt, settings.web)
        self.settings = settings
        self.web = settings.web
        self.stats: StatsReader = self.office.stats
        self.limiter: LoginLimiter = self.office.limiter
        self.audit: Audit = self.office.audit
        self.kb = KBConsole(self.office.kb)
        self.sandbox = sandbox
        # The analytics store: as given (the CLI's composition), else read-only when nobody writes it.
        self.reports = ConsoleReports(rt, store or store_opener(settings.analytics.path(settings.redis.data_dir)))
        self.open_streams = 0
        self.streams_of: Counter[str] = Counter()  # user name -> live streams open

    @property
    def users(self) -> Users:
        return self.office.users

    @property
    def sessions(self) -> Sessions:
        return self.office.sessions

    @property
    def presence(self) -> Presence:
        """Agents' status, heartbeat and profile (router/presence.py): each agent its own status,
        admins every profile."""
        return self.office.presence

    async def start(self) -> None:
        await self.office.start()

    async def stop(self) -> None:
        """Release what ``start``/``__init__`` opened (the connection pools)."""
        await self.office.close()

    @property
    def first_admin_file(self) -> Path:
        return self.settings.redis.data_dir / FIRST_ADMIN_FILE

    async def first_admin(self) -> Path | None:
        """Create the first admin when there is no user; where its one-time password is, when generated.

        The password goes to ``first_admin_file`` (0600 in the 0700 data directory), never to the
        terminal or the log: process output is collected and kept by supervisors and log shippers
        for longer than the password lives. The file is removed at a later start once the admin has
        chosen a password (or is gone).
        """
        web = self.web
        configured = None
        if (web.admin_password and web.admin_password.get_secret_value()) or web.admin_password_file:
            configured = read_secret(web.admin_password, web.admin_password_file, "web.admin_password")
        made = await self.users.ensure_first_admin(configured)
        path = self.first_admin_file
        if made is None:
            admin = await self.users.get(FIRST_ADMIN)
            if admin is None or not admin.must_change:
                path.unlink(missing_ok=True)
            return None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file left with wider rights by hand
        with os.fdopen(fd, "w") as out:
            out.write(made + "\n")
        return path

    # -- groups and engine ---------------------------------------------------------------------
    async def engine(self) -> Engine:
        """The rule set in force (see Runtime.engine)."""
        return await self.office.engine()

    async def all_groups(self) -> list[str]:
        return await self.stats.groups()

    async def groups_of(self, user: User) -> list[str]:
        groups = await self.all_groups()
        if user.is_admin:
            return groups
        # An agent's groups, in the rules' order, including a group it has that no rule names yet.
        return [g for g in groups if g in user.groups] + [g for g in user.groups if g not in groups]

    # -- queues and conversations --------------------------------------------------------------
    async def queue(self, user: User, group: str, limit: int = 100) -> list[Conversation]:
        require_group(user, group)
        return await self.office.queues.head(group, limit=limit)

    async def queue_stats(self, user: User) -> dict[str, dict[str, Any]]:
        return queue_dict(await self.stats.queues(await self.groups_of(user)))

    async def group_agents(self, user: User, group: str) -> list[dict[str, Any]]:
        """Who serves ``group``: status (offline once the heartbeat lapsed past the grace period),
        load and capacity per channel (router/presence.py); online first, then away, then offline."""
        require_group(user, group)
        now, grace = self.presence.clock.now_ms(), self.presence.grace_ms
        agents = [a.to_dict(now, grace) for a in await self.presence.all() if group in a.groups]
        order = {"online": 0, "away": 1}
        return sorted(agents, key=lambda a: (order.get(a["status"], 2), a["name"]))

    async def mine(self, user: User) -> list[Conversation]:
        return [c for c in await self.office.conversations.of_agent(user.name) if user.sees(c.group)]

    async def conversation(self, user: User, conv_id: str) -> Conversation:
        """The conversation when ``user`` may see it; NotFound otherwise (existence not disclosed)."""
        if not conv_id.isdigit():
            raise NotFound(f"conversation {conv_id}")
        conv = await self.office.conversations.get(conv_id)
        if not user.sees(conv.group):
            raise NotFound(f"conversation {conv_id}")
        return conv

    async def detail(self, user: User, conv_id: str) -> tuple[Conversation, list[HistoryEntry], dict[str, str]]:
        conv = await self.conversation(user, conv_id)
        history = await self.office.conversations.history(conv_id)
        deliveries = await self.office.conversations.deliveries(conv_id)
        return conv, history, deliveries

    # -- SLA countdowns (router/slaview.py) ----------------------------------------------------
    async def sla(self, user: User, conv_id: str) -> dict[str, Any]:
        """The conversation's SLA countdowns for an agent of its group (or an admin)."""
        conv = await self.conversation(user, conv_id)
        return await self.countdowns(conv, await self.office.conversations.history(conv_id))

    async def countdowns(self, conv: Conversation, history: list[HistoryEntry]) -> dict[str, Any]:
        """``policy`` (the number it started under, None: not timed), ``now_ms`` (the server's
        clock: a page counts down from it, not from its own, which may be off), ``targets``
        (router/slaview.py) and ``error`` (a clock that cannot be evaluated, said rather than
        hidden)."""
        now = round(time.time() * 1000)
        out: dict[str, Any] = {"policy": conv.sla_policy, "now_ms": now, "targets": [], "error": ""}
        if conv.sla_policy is None:
            return out
        try:
            policy = await self.office.sla_policies.policy(conv.sla_policy)
            out["targets"] = countdowns(policy, conv, history, now)
        except (PolicyError, ClockError) as exc:
            out["error"] = str(exc)
        return out

    async def sla_watch(self, within_s: int, limit: int = 200) -> list[dict[str, Any]]:
        """Supervisors: open conversations whose nearest SLA deadline is within ``within_s`` or
        past, most urgent first. Read from each shard's timer set ``sla:due`` (bounded: ``limit``
        per shard): a conversation is due there at or before its nearest deadline, so the set up
        to now + ``within_s`` holds every one about to breach; a breached one stays there while its
        ladder or another target still has a step to come."""
        now = round(time.time() * 1000)
        rows: list[dict[str, Any]] = []
        convs = await self.office.conversations.get_many(await self.office.sla_due(now + within_s * 1000, limit))
        convs = [conv for conv in convs if conv.status != "closed"]
        histories = await self.office.conversations.histories([conv.id for conv in convs])
        for conv, history in zip(convs, histories, strict=True):
            clock = await self.countdowns(conv, history)
            nearest = nearest_ms(clock["targets"])
            if nearest is not None and nearest <= now + within_s * 1000:
                rows.append({"conv": conv, "nearest_ms": nearest, "sla": clock})
        rows.sort(key=lambda r: r["nearest_ms"])
        return rows

    # The writes take the request id of a client's retry (the API's Idempotency-Key), see
    # router/requests.py: sent again with it, a write returns its first result and changes nothing.
    async def claim(self, user: User, group: str, conv_id: str = "", request_id: str | None = None) -> str | None:
        require_group(user, group)
        return await self.office.conversations.claim(group, user.name, conv_id, request_id)

    async def reply(self, user: User, conv_id: str, text: str, request_id: str | None = None) -> str:
        await self.conversation(user, conv_id)
        return await self.office.conversations.reply(conv_id, text, user.name, request_id)

    async def release(self, user: User, conv_id: str, request_id: str | None = None) -> None:
        await self.conversation(user, conv_id)
        await self.office.conversations.release(conv_id, user.name, request_id)

    async def transfer(
        self, user: User, conv_id: str, group: str, reason: str = "", request_id: str | None = None
    ) -> None:
        conv = await self.conversation(user, conv_id)
        if group not in await self.all_groups():
            raise BadRequest(f"unknown group {group!r}")
        # A retry of a transfer that ran finds the conversation in the group already: no error.
        if group == conv.group and not (request_id and await self.office.request_seen(conv_id, request_id)):
            raise BadRequest(f"conversation {conv_id} is already in {group}")
        await self.office.conversations.transfer(conv_id, group, user.name, reason, request_id)

    async def set_priority(self, user: User, conv_id: str, priority: str, request_id: str | None = None) -> None:
        await self.conversation(user, conv_id)
        await self.office.conversations.set_priority(conv_id, parse_priority(priority), user.name, request_id)

    async def wait_on_user(self, user: User, conv_id: str, on: bool, request_id: str | None = None) -> None:
        await self.conversation(user, conv_id)
        await self.office.conversations.wait_on_user(conv_id, on, user.name, request_id)

    async def close(self, user: User, conv_id: str, reason: str = "", request_id: str | None = None) -> None:
        await self.conversation(user, conv_id)
        await self.office.conversations.close(conv_id, user.name, reason, request_id)

    async def note(self, user: User, conv_id: str, text: str, request_id: str | None = None) -> None:
        await self.conversation(user, conv_id)
        if not text.strip():
            raise BadRequest("a note needs text")
        await self.office.conversations.note(conv_id, user.name, text, request_id)

    # -- admission control (router/admission.py) -----------------------------------------------
    async def blocked_senders(self, user: User) -> list[Block]:
        require_admin(user)
        return await self.office.senders.list()

    async def block_sender(
        self, user: User, action: str, sender: str, for_: str = "", reason: str = "", conv_id: str = ""
    ) -> Block:
        """Ban or mute ``sender`` (``CHANNEL:ID``), for ``for_`` (``1h``; "" until unbanned); from
        a conversation (``conv_id``), its sender, and the conversation is held at once."""
        require_admin(user)
        if conv_id:
            conv = await self.conversation(user, conv_id)
            sender = f"{conv.channel}:{conv.sender_id}"
        block = await self.office.senders.block(
            action, sender, by=user.name, for_s=parse_duration(for_) if for_.strip() else None, reason=reason
        )
        if conv_id:
            await self.office.conversations.hold(conv_id, user.name, block.mode)
        return block

    async def unban_sender(self, user: User, sender: str) -> bool:
        require_admin(user)
        return await self.office.senders.unban(sender, by=user.name)

    async def restore(self, user: User, conv_id: str) -> None:
        """Put a held conversation back in its queue."""
        require_admin(user)
        await self.conversation(user, conv_id)
        await self.office.senders.restore(conv_id, by=user.name)

    # -- canned responses ----------------------------------------------------------------------
    async def canned(self) -> dict[str, str]:
        return await self.office.canned.all()

    async def set_canned(self, user: User, title: str, text: str) -> None:
        require_admin(user)
        if not title.strip() or not text.strip():
            raise BadRequest("a canned response needs a title and a text")
        await self.office.canned.put(title.strip(), text.strip())

    async def delete_canned(self, user: User, title: str) -> None:
        require_admin(user)
        await self.office.canned.delete(title)

    # -- rules ---------------------------------------------------------------------------------
    async def active_source(self) -> tuple[str, Published | None]:
        """The source of the rule set in force: published, else the configured file, else the default."""
        published = await self.office.rules.active()
        if published is not None:
            return published.source, published
        path = self.settings.rules.file
        if path is not None:
            return await asyncio.to_thread(path.read_text, encoding="utf-8"), None
        default = importlib.resources.files("rules") / "default.yaml"
        return default.read_text(encoding="utf-8"), None

    async def validate(self, source: str) -> Validation:
        """Compile a draft: first in a child process with memory and time limits (router/drafts.py),
        then, when it compiled there, here, for its engine."""
        errors, _ = await drafts.check(source, self.web.draft_memory_mb, self.web.draft_timeout_s)
        if errors:
            return Validation(None, errors)
        try:
            # With the runtime's triage model, as publishing compiles it: try and replay show what
            # the workers would do (the model's routing, soft rules it overrides).
            engine = await self.office.rules.compile(source, "draft.yaml")
        except RuleSetError as exc:
            return Validation(None, exc.errors)
        return Validation(engine, list(engine.warnings))

    async def try_message(self, source: str | None, message: MessageIn) -> tuple[Decision | None, Validation | None]:
        """Evaluate one message with the draft (or, without one, the rules in force)."""
        if source is None:
            return (await self.engine()).evaluate(message), None
        checked = await self.validate(source)
        if checked.engine is None:
            return None, checked
        return checked.engine.evaluate(message), checked

    async def replay(self, source: str, count: int) -> tuple[list[ReplayRow], int, Validation]:
        """Route the last ``count`` inbox messages with the rules in force and with the draft.

        Returns the rows whose decision differs, how many messages were compared, and the draft's
        validation. Messages with a redacted secret are not in the inbox any more (the worker
        deletes their raw entry), so they are not replayed — by design.
        """
        checked = await self.validate(source)
        if checked.engine is None:
            return [], 0, checked
        current = await self.engine()
        rows: list[ReplayRow] = []
        compared = 0
        for entry_id, raw in await self.office.recent_inbox(max(1, min(count, 5000))):
            try:
                env = decode_envelope(raw)
            except Exception:  # a malformed entry is the dead-letter stream's business, not replay's
                continue
            # At its own receipt time: a draft's time windows judge the message as it came in.
            msg = message_in(env)
            before, after = current.evaluate(msg), checked.engine.evaluate(msg)
            compared += 1
            changed = tuple(
                name
                for name, a, b in (
                    ("group", before.group, after.group),
                    ("priority", before.priority, after.priority),
                    ("tags", before.tags, after.tags),
                    ("auto_reply", before.auto_reply, after.auto_reply),
                    ("routed_by", before.routed_by, after.routed_by),
                )
                if a != b
            )
            if changed:
                rows.append(
                    ReplayRow(
                        entry=entry_id,
                        channel=env.channel,
                        sender=env.sender.name or env.sender.id,
                        # Shown to an admin: the draft's redaction applies, like in history.
                        text=after.text,
                        before=_summary(before),
                        after=_summary(after),
                        changed=changed,
                    )
                )
        return rows, compared, checked

    async def publish(self, user: User, source: str, comment: str = "", request_id: str | None = None) -> Published:
        require_admin(user)
        errors, _ = await drafts.check(source, self.web.draft_memory_mb, self.web.draft_timeout_s)
        if errors:
            raise RuleSetError(errors)
        published = await self.office.rules.publish(source, user.name, comment, "draft.yaml", request_id)
        await self.office.engine(fresh=True)
        await self.audit.record("rules.publish", actor=user.name, target=f"version {published.version}")
        return published

    async def rollback(self, user: User, to: int | None, request_id: str | None = None) -> Published:
        require_admin(user)
        target = await self.office.rules.rollback(user.name, to, request_id)
        await self.office.engine(fresh=True)
        await self.audit.record("rules.rollback", actor=user.name, target=f"version {target.version}")
        return target

    async def rules_history(self) -> list[dict[str, str]]:
        return await self.office.rules.log(100)

    async def models(self) -> dict[str, Any]:
        """The published triage models and the shadow's scores (``switchboard model versions``
        and ``model status``)."""
        versions = [v.to_dict() for v in await self.office.models.versions()]
        return {"versions": versions, **await self.office.models.status()}

    async def rule_version(self, number: int) -> Published:
        return await self.office.rules.get(number)

    async def rule_versions_diff(self, a: int, b: int) -> str:
        return await self.office.rules.diff(a, b)

    async def diff_against_active(self, source: str) -> str:
        current, _ = await self.active_source()
        return "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True), source.splitlines(keepends=True), "in force", "draft"
            )
        )

    # -- failed deliveries ---------------------------------------------------------------------
    async def retry_failed(self, user: User, conv_id: str) -> int:
        """Queue the conversation's failed replies again (``switchboard outbox retry --conversation``)."""
        require_admin(user)
        await self.conversation(user, conv_id)
        return await self.office.retry_failed(await self.office.failed_replies(conv_id), user.name)

    # -- sandbox -------------------------------------------------------------------------------
    def _simulator(self) -> SandboxPort:
        if self.sandbox is None:
            raise NotFound("the sandbox is off")
        return self.sandbox

    async def sandbox_send(self, user: str, text: str, attributes: dict[str, str] | None = None) -> str:
        if not user.strip() or not text.strip():
            raise BadRequest("a sandbox message needs a user and a text")
        return await self._simulator().send(user.strip(), text, attributes or {})

    async def sandbox_inbox(self, user: str) -> list[dict[str, Any]]:
        return await self._simulator().inbox(user)

    async def sandbox_press(self, user: str, number: int, reply: str | None = None) -> str:
        """Press a button under a reply the sandbox user received; the button's label."""
        if not user.strip():
            raise BadRequest("a sandbox press needs a user")
        return await self._simulator().press(user.strip(), number, reply or None)

    # -- e-mail button links (public: no login) --------------------------------------------------
    def open_link(self, token: str) -> Link:
        """What a button link stands for; LinkInvalid (tampered, not ours) or LinkExpired."""
        return self.office.links.open(token)

    async def press_link(self, token: str) -> Link:
        """Record the press a link stands for (once per link, however often it is confirmed)."""
        links = self.office.links
        link = links.open(token)
        await self.office.actions.append(links.press(link))
        return link

    # -- dashboard -----------------------------------------------------------------------------
    async def dashboard(self) -> dict[str, Any]:
        """``stats --json`` with the top tags and the time series."""
        data = await self.stats.read()
        data["top_tags"] = await self.stats.top_tags()
        data["samples"] = await self.samples()
        return data

    async def samples(self, count: int = 240) -> list[dict[str, Any]]:
        return await self.office.samples.recent(count)

    async def take_sample(self) -> bool:
        """Append one sample of depths and counters, unless another console did in this interval."""
        return await self.office.samples.take(self.stats.sample)


def _summary(decision: Decision) -> dict[str, Any]:
    return {
        "group": decision.group,
        "priority": f"P{decision.priority}",
        "tags": list(decision.tags),
        "auto_reply": decision.auto_reply,
        "routed_by": decision.routed_by,
    }
