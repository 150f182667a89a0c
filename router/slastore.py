"""Published SLA policies (docs/sla.md): versioned like rule sets (router/published.py), and the
policies workers and the SLA timer use.

A policy is validated whole (``sla.load``) and its group names are checked against the rule set in
force before it is published: a refused policy raises ``PolicyError`` with every reason and the
active one stays. A conversation keeps the number of the policy it started under (field
``sla_v``), so ``SlaPolicies.policy(number)`` keeps every published version at hand, compiled once.
With no policy ever published, nothing changes: conversations carry no ``sla_v`` and the queue's
due time is the configured ``conversations.sla_s``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection

import redis.asyncio as aioredis

from router.keys import Keys
from router.published import Compiled, Versions
from rules import Engine
from rules.model import RuleError
from sla import Policy, PolicyError, load
from sla.calendar import Calendar

log = logging.getLogger("switchboard.sla")


def groups_named(policy: Policy) -> set[str]:
    """Every group a policy names: its calendars' groups, its group overrides, its move_group targets."""
    named = set(policy.group_calendars) | set(policy.by_group)
    for ladder in policy.ladders.values():
        for step in ladder:
            named |= {str(a.value) for a in step.actions if a.kind == "move_group"}
    return named


def _position(source: str, name: str) -> tuple[int, int]:
    """Where ``name`` is first written as a word in ``source`` (line, column; 1, 1 if nowhere)."""
    found = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", source)
    if found is None:
        return 1, 1
    line = source.count("\n", 0, found.start()) + 1
    return line, found.start() - (source.rfind("\n", 0, found.start()) + 1) + 1


def unknown_groups(named: Collection[str], groups: Collection[str], source: str, filename: str) -> list[RuleError]:
    """One error for each group ``named`` that the rule set in force (``groups``) does not have,
    where the text first writes it (SLA and assignment policies alike)."""
    known = ", ".join(sorted(groups))
    return [
        RuleError(
            filename,
            *_position(source, g),
            None,
            f"group {g!r} is not a group of the rule set in force (known: {known})",
        )
        for g in sorted(set(named) - set(groups))
    ]


def check_groups(policy: Policy, groups: Collection[str], source: str, filename: str) -> None:
    """Refuse a policy that names a group the rule set in force does not have."""
    errors = unknown_groups(groups_named(policy), groups, source, filename)
    if errors:
        raise PolicyError(errors)


class SlaStore(Versions):
    """Publish, roll back, list and diff SLA policies; ``engine`` gives the rule set in force."""

    def __init__(self, client: aioredis.Redis, keys: Keys, engine: Callable[[], Awaitable[Engine]]) -> None:
        super().__init__(client, keys, "sla", "SLA policy")
        self._engine = engine

    async def validate(self, source: str, filename: str = "<sla>") -> Policy:
        """The compiled policy, or ``PolicyError`` with every problem (the groups included)."""
        policy = load(source, filename)
        check_groups(policy, (await self._engine()).groups, source, filename)
        return policy

    async def _checked(self, source: str, filename: str) -> str:
        return (await self.validate(source, filename)).version


class SlaPolicies:
    """The active policy number and every published policy by number, compiled once."""

    def __init__(self, store: SlaStore) -> None:
        self._store = store
        self._compiled = Compiled(store, load, "sla")
        self.active: int | None = None

    async def refresh(self) -> int | None:
        """The active number (None: no policy published); the workers ask every
        ``worker.rules_poll_s``, as for the rule set."""
        number = await self._store.active_number()
        if number != self.active:
            log.info("SLA policy in force: %s", number)
        self.active = number
        return number

    async def policy(self, number: int) -> Policy:
        """Published policy ``number``; a stored one that no longer loads (a newer sla/ refusing
        an old text) raises ``PolicyError``."""
        return await self._compiled.get(number)

    async def calendars(self) -> Callable[[str], Calendar] | None:
        """The business-hours calendar of each group under the policy in force (the reports'
        durations); None without a published policy."""
        number = await self.refresh()
        return (await self.policy(number)).calendar if number is not None else None
