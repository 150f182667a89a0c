"""Impostor cases: members whose names look like staff names, waiting for a moderator.

The matching is the pure ``impostors`` library; this module keeps what it finds. ``ImpostorGuard``
is what a channel gets (``ChannelContext.impostors``): it checks a member's names on a join, a
rename or a group message and opens a case in Redis; ``ImpostorCases`` is the review queue the CLI
(``switchboard impostors list|dismiss|confirm``) and the console read and decide. Warn-first:
nothing here bans or mutes anyone; a moderator who confirms a case acts on the platform.

One case per (platform, bot account, member): seen again with the same names it only counts; a
case a moderator decided stays decided until the member takes new names (router/lua/impostor.lua).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from impostors import Matcher, StaffMember, Thresholds, Verdict
from router.config import ImpostorSettings
from router.errors import NotFound
from router.keys import Keys
from router.scripts import Scripts, argv, map_error
from rules.locale import localized

log = logging.getLogger("switchboard.impostors")

Decision = Literal["dismissed", "confirmed"]
#: What a moderator does (CLI, console) -> the case's status after it.
DECISIONS: dict[str, Decision] = {"dismiss": "dismissed", "confirm": "confirmed"}
#: Members remembered per process so a chatty member is not checked on every message.
_MEMORY = 10_000
LOG_CAP = 10_000


@dataclass(frozen=True, slots=True)
class ImpostorCase:
    id: str
    platform: str
    account: str
    user_id: str
    names: tuple[str, ...]
    level: str
    reason: str
    staff_id: str
    staff_name: str
    where: str
    status: str
    first_seen: int
    last_seen: int
    seen: int
    decided_by: str

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def case_id(platform: str, account: str, user_id: str) -> str:
    return f"{platform}:{account}:{user_id}"


class ImpostorCases:
    """The review queue in Redis (keys ``impostors:*``, router/keys.py)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, scripts: Scripts) -> None:
        self._client = client
        self._keys = keys
        self._scripts = scripts

    async def report(
        self, platform: str, account: str, user_id: str, names: Sequence[str], verdict: Verdict, where: str
    ) -> tuple[str, bool]:
        """Open (or count) the member's case; (its status, whether this report opened it)."""
        fields = {
            "platform": platform,
            "account": account,
            "user_id": user_id,
            "level": verdict.level,
            "reason": verdict.reason,
            "staff_id": verdict.staff.id if verdict.staff else "",
            "staff_name": verdict.staff_name,
            "where": where,
        }
        cid = case_id(platform, account, user_id)
        args = argv(self._keys.prefix, "report", cid, LOG_CAP, json.dumps(fields), json.dumps(list(names)))
        status, opened = await self._scripts.impostor(args=args)
        return status.decode(), bool(opened)

    async def decide(self, cid: str, decision: Decision, by: str) -> str:
        """Dismiss or confirm a case; the status it had. NotFound for an unknown case."""
        try:
            previous = await self._scripts.impostor(args=argv(self._keys.prefix, "decide", cid, LOG_CAP, decision, by))
        except Exception as exc:
            raise map_error(exc) from None
        return str(previous.decode())

    async def get(self, cid: str) -> ImpostorCase:
        raw = await self._client.hgetall(self._keys.impostor_case(cid))
        if not raw:
            raise NotFound(f"no impostor case {cid}")
        return _case(cid, {k.decode(): v.decode() for k, v in raw.items()})

    async def open_cases(self, limit: int = 100) -> list[ImpostorCase]:
        """Cases waiting for a moderator, oldest first."""
        ids = [i.decode() for i in await self._client.zrange(self._keys.impostors_open, 0, limit - 1)]
        pipe = self._client.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(self._keys.impostor_case(cid))
        rows = await pipe.execute()
        return [
            _case(cid, {k.decode(): v.decode() for k, v in raw.items()})
            for cid, raw in zip(ids, rows, strict=True)
            if raw
        ]


def _case(cid: str, raw: dict[str, str]) -> ImpostorCase:
    return ImpostorCase(
        id=cid,
        platform=raw.get("platform", ""),
        account=raw.get("account", ""),
        user_id=raw.get("user_id", ""),
        names=tuple(json.loads(raw.get("names", "[]"))),
        level=raw.get("level", ""),
        reason=raw.get("reason", ""),
        staff_id=raw.get("staff_id", ""),
        staff_name=raw.get("staff_name", ""),
        where=raw.get("where", ""),
        status=raw.get("status", ""),
        first_seen=int(raw.get("first_seen", 0)),
        last_seen=int(raw.get("last_seen", 0)),
        seen=int(raw.get("seen", 0)),
        decided_by=raw.get("decided_by", ""),
    )


@dataclass(frozen=True, slots=True)
class Flag:
    """A member the check flagged: the verdict, and the group warning to post (None: none)."""

    verdict: Verdict
    opened: bool
    warning: str | None


def build_matcher(settings: ImpostorSettings) -> Matcher:
    staff = [
        StaffMember(platform, who.id, tuple(who.names))
        for platform, members in settings.staff.items()
        for who in members
    ]
    return Matcher(staff, Thresholds(settings.impostor_ratio, settings.review_ratio))


class ImpostorGuard:
    """The impostor check as a channel uses it (``ChannelContext.impostors``)."""

    def __init__(
        self, settings: ImpostorSettings, cases: ImpostorCases, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.cases = cases
        self.matcher = build_matcher(settings)
        self._clock = clock
        self._checked: OrderedDict[tuple[str, str, str], tuple[tuple[str, ...], float]] = OrderedDict()

    def staff_member(self, platform: str, user_id: str) -> StaffMember | None:
        """The configured staff account with this platform id (names never make anyone staff)."""
        return self.matcher.staff_member(platform, user_id)

    async def check(
        self, platform: str, account: str, user_id: str, names: Sequence[str], where: str, language: str = ""
    ) -> Flag | None:
        """Check a member's names (a join, a rename, a message); a flagged member gets a case.

        None when the member is fine, or was checked with these names within ``recheck_s``.
        The warning is given once, when the report opened the case, for ``impostor`` verdicts only.
        """
        if not self.settings.enabled:
            return None
        names = tuple(n for n in names if n)
        member = (platform, account, user_id)
        if not self._due(member, names):
            return None
        verdict = self.matcher.check(platform, user_id, names)
        opened = await self._report(member, names, verdict, where)
        if not verdict.flagged:
            return None
        warn = opened and verdict.level == "impostor" and self.settings.warn_in_group
        return Flag(verdict, opened, self.warning(verdict, language) if warn else None)

    async def check_forwarded(
        self, platform: str, account: str, user_id: str, names: Sequence[str], where: str, language: str = ""
    ) -> str | None:
        """The account a forwarded message came from: checked like a member (a flagged one gets a
        case, once), and the warning for whoever forwarded it, each time: every forward is someone
        asking whether that account is staff. None: no warning (fine, ``review``, or warnings off)."""
        if not self.settings.enabled:
            return None
        names = tuple(n for n in names if n)
        member = (platform, account, user_id)
        verdict = self.matcher.check(platform, user_id, names)
        if self._due(member, names):
            await self._report(member, names, verdict, where)
        if verdict.level != "impostor" or not self.settings.warn_in_group:
            return None
        return self.warning(verdict, language)

    def _due(self, member: tuple[str, str, str], names: tuple[str, ...]) -> bool:
        """Whether ``member`` is to be checked: not with these names within ``recheck_s``."""
        seen = self._checked.get(member)
        return seen is None or seen[0] != names or self._clock() - seen[1] >= self.settings.recheck_s

    async def _report(self, member: tuple[str, str, str], names: tuple[str, ...], verdict: Verdict, where: str) -> bool:
        """Open or update the case of a flagged member, then remember the check; whether the
        report opened the case."""
        platform, account, user_id = member
        now = self._clock()
        opened = False
        if verdict.flagged:
            _, opened = await self.cases.report(platform, account, user_id, names, verdict, where)
            log.info(
                "%s %s: member %s (%r) in %s looks like staff %r: %s%s",
                platform,
                account,
                user_id,
                verdict.name,
                where,
                verdict.staff_name,
                verdict.level,
                " (case opened)" if opened else "",
            )
        # Remembered only once the case is written: a failed write is tried again next time.
        self._checked[member] = (names, now)
        self._checked.move_to_end(member)
        while len(self._checked) > _MEMORY:
            self._checked.popitem(last=False)
        return opened

    def warning(self, verdict: Verdict, language: str = "") -> str:
        return localized(self.settings.warning, language).format(name=verdict.name, staff=verdict.staff_name)

    def verify_text(self, platform: str, user_id: str, label: str) -> str:
        """The answer to ``/verify``: whether the account ``user_id`` (shown as ``label``) is staff."""
        member = self.staff_member(platform, user_id)
        if member is not None:
            return f"✅ {label} is a member of our staff."
        return f"⚠️ {label} is NOT a member of our staff. Staff never DM first and never ask for your recovery phrase."
